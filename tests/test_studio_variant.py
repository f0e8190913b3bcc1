"""The sidebar's "New variant" / "Resume": a job record back into Configure LoRA's inputs gives the same config."""
from __future__ import annotations

import json

import pytest


@pytest.fixture
def pack(nodes):
    return nodes


@pytest.fixture
def configure(pack, with_checkpoint):
    return lambda **kw: pack.ConfigureLoRA.execute(**kw).result[0]


# what Train LoRA adds from Load Dataset and the server, not Configure LoRA's business
_TRAIN_SETS = {"dataset", "trigger_token", "placeholder", "jobs_dir", "cache_dir", "resume_from", "tokenizer_dir"}


@pytest.mark.parametrize("kw", [
    dict(preset="Fotostudio – Schnellstart", name="plain", mixed_precision="no"),
    dict(preset="Galerie – Feinabstimmung", name="mein stil", rank=16, learning_rate=2e-5, seed=7, lr_scheduler="linear",
         mixed_precision="bf16", train_text_encoder="off", resolution=768, max_train_steps=1234,
         extra='{"unet_target_modules": ["to_q", "to_v"], "noise_offset": 0.05, "preview_prompts": ["1234", "true"]}'),
    dict(preset="Atelier – Detailtreue", name="prior", class_prompt="portrait of a person", num_class_images=80,
         gradient_checkpointing="on", alpha=3.0, mixed_precision="no", extra='{"trigger_word_note": 1}'),
])
def test_record_back_to_inputs_rebuilds_the_config(pack, configure, tmp_path, kw):
    from lora_studio_pack.nodes.variant import variant

    if "trigger_word_note" in kw.get("extra", ""):
        kw = dict(kw, extra='{"caption_dropout": 0.1, "shuffle_tags": true}')
    cfg = configure(ckpt_name="v1-5.safetensors", **kw)
    record = {"config": dict(cfg, dataset=str(tmp_path / "input" / "foxes"), trigger_token="1234",
                             jobs_dir="/x/jobs", cache_dir="/x/cache", resume_from="auto")}
    (tmp_path / "input" / "foxes").mkdir(parents=True)
    v = variant(record, tmp_path / "input", ["v1-5.safetensors"], lambda n: cfg["base_model"])
    assert v["LoraStudio_LoadDataset"] == {"dataset": "foxes", "trigger_token": "1234", "placeholder": "<my_token>"}
    inputs = v["LoraStudio_ConfigureLoRA"]
    assert inputs["ckpt_name"] == "v1-5.safetensors"
    again = configure(**inputs)
    diff = {k: (cfg[k], again[k]) for k in cfg if k not in _TRAIN_SETS and cfg[k] != again[k]}
    assert diff == {}, diff
    json.dumps(inputs)  # goes to the browser as JSON
