"""The node adapters on the real ComfyUI's V3 API (comfy_api from COMFYUI_PATH; skipped without it):
server-side validation messages, the schema as ComfyUI reads it."""
from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
from conftest import comfyui_tree

from trainer.cli import build_config


def test_validate_inputs_returns_the_trainers_message(nodes, with_checkpoint):
    v = nodes.ConfigureLoRA.validate_inputs
    ok = dict(ckpt_name="v1-5.safetensors", preset="Atelier – Detailtreue", name="x")
    assert v(**ok) is True
    msg = v(**dict(ok, learning_rate=5e-7))
    assert "learning_rate" in msg and "Fix:" in msg and "1e-06" in msg
    msg = v(**dict(ok, resolution=64))
    assert "resolution" in msg and "256" in msg
    msg = v(**dict(ok, extra='{"noise_offset": 0.05, "snr_gamma": -1}'))
    assert "snr_gamma" in msg
    assert "JSON" in v(**dict(ok, extra="{broken"))
    assert "not one of" in v(**dict(ok, ckpt_name="missing.safetensors"))
    assert "pick your base model" in v(**dict(ok, ckpt_name=""))  # as the templates leave it
    assert "not one of" in v(**dict(ok, train_text_encoder="maybe"))
    assert v(**dict(ok, rank=16.0)) is True  # a float widget value for an integer field (API clients send them)


def test_class_prompt_turns_prior_preservation_on(nodes, with_checkpoint):
    config, _ = nodes.ConfigureLoRA.execute(ckpt_name="v1-5.safetensors", preset="Fotostudio – Schnellstart",
                                            name="x", class_prompt="portrait of a person",
                                            num_class_images=80).result
    assert config["with_prior_preservation"] and config["class_prompt"] == "portrait of a person"
    assert config["num_class_images"] == 80


def test_nodes_are_v3_with_a_tooltip_on_every_input_and_output(nodes):
    from comfy_api.latest import io

    mappings, names = nodes.node_mappings()
    assert set(mappings) == {"LoraStudio_LoadDataset", "LoraStudio_DatasetFromImages", "LoraStudio_ConfigureLoRA",
                             "LoraStudio_TrainLoRA", "LoraStudio_SaveLoRAToModels"}
    for node_id, cls in mappings.items():
        assert issubclass(cls, io.ComfyNode)
        schema = cls.GET_SCHEMA()  # ComfyUI's own checks: unique ids, finalised outputs
        assert schema.description and schema.category == "LoRA Studio" and names[node_id].endswith("(LoRA Studio)")
        for inp in schema.inputs:
            assert inp.tooltip, f"{node_id}.{inp.id}"
        for out in schema.outputs:
            assert out.tooltip and out.display_name, f"{node_id} output {out.id}"


def test_old_input_and_output_names_are_kept(nodes):
    """Saved workflows address inputs by name and outputs by slot: both must stay as they were."""
    m, _ = nodes.node_mappings()
    assert tuple(m["LoraStudio_TrainLoRA"].RETURN_NAMES) == ("lora", "model", "clip", "summary", "lora_model")
    assert tuple(m["LoraStudio_TrainLoRA"].RETURN_TYPES) == ("LORA_STUDIO_LORA", "MODEL", "CLIP", "STRING", "LORA_MODEL")
    assert tuple(m["LoraStudio_LoadDataset"].RETURN_NAMES) == ("dataset", "report")
    assert tuple(m["LoraStudio_ConfigureLoRA"].RETURN_NAMES) == ("config", "command")
    assert tuple(m["LoraStudio_SaveLoRAToModels"].RETURN_NAMES) == ("lora_name",)
    spec = m["LoraStudio_ConfigureLoRA"].INPUT_TYPES()
    assert list(spec["required"]) == ["ckpt_name", "preset", "name"]
    assert list(spec["optional"]) == ["resolution", "max_train_steps", "learning_rate", "rank", "alpha",
                                      "train_text_encoder", "lr_scheduler", "train_batch_size",
                                      "gradient_accumulation_steps", "mixed_precision", "gradient_checkpointing",
                                      "seed", "class_prompt", "num_class_images", "extra"]
    assert spec["optional"]["seed"][1]["control_after_generate"] is False
    assert m["LoraStudio_TrainLoRA"].INPUT_TYPES()["hidden"] == {"unique_id": ("UNIQUE_ID",)}


def _core_node_ids(comfy) -> set[str]:
    """Every node id ComfyUI registers, read from its sources: V1 mapping keys and V3 node_id=…."""
    ids = set()
    for path in [comfy / "nodes.py", *(comfy / "comfy_extras").glob("*.py")]:
        text = path.read_text(encoding="utf-8")
        ids |= set(re.findall(r'node_id="([A-Za-z0-9_]+)"', text))
        for block in re.findall(r"NODE_CLASS_MAPPINGS\s*=\s*\{(.*?)\n\}", text, re.S):
            ids |= set(re.findall(r'^\s*"([A-Za-z0-9_ .-]+)"\s*:', block, re.M))
    return ids


def test_node_ids_are_prefixed_and_clash_with_no_core_node(nodes):
    core = _core_node_ids(comfyui_tree())
    # the scan finds the ids that matter here (core's own trainer and the LoRA loaders), so the check can fail
    assert {"TrainLoraNode", "SaveLoRANode", "LoraModelLoader", "LossGraphNode", "LoadImageSetFromFolderNode",
            "LoraLoader", "LoraLoaderModelOnly", "KSampler"} <= core
    ours = set(nodes.node_mappings()[0])
    assert all(k.startswith("LoraStudio_") for k in ours)
    assert not core & ours


def test_dataset_from_images_gives_what_load_dataset_gives(nodes, tmp_path, monkeypatch):
    import torch

    images_mod = importlib.import_module("lora_studio_pack.nodes.images")
    monkeypatch.setattr(images_mod, "studio_dir", lambda *parts: tmp_path.joinpath("lora_studio", *parts))
    small = torch.rand(3, 8, 8, 3, generator=torch.Generator().manual_seed(0))
    batch = small.repeat_interleave(8, dim=1).repeat_interleave(8, dim=2)  # IMAGE: [batch, 64, 64, 3], 0..1
    out = nodes.DatasetFromImages.execute(batch, "watercolor of <my_token>\nsketch of <my_token>\nphoto of <my_token>",
                                          " sks ", name="../my set")
    data, report = out.result
    assert set(data) == {"root", "trigger_token", "placeholder", "dataset", "report"} and data["trigger_token"] == "sks"
    root = Path(data["root"])
    assert root.parent == tmp_path / "lora_studio" / "datasets" and root.name.startswith("my_set-")
    assert sorted(s.caption for s in data["dataset"].samples) == ["photo of sks", "sketch of sks", "watercolor of sks"]
    assert "3" in report and data["report"] == report
    with pytest.raises(Exception, match="3 pictures but 2 captions"):
        nodes.DatasetFromImages.execute(batch, "a\nb", "sks")


def test_train_lora_accepts_the_dataset_that_dataset_from_images_saved(nodes, tmp_path, monkeypatch):
    """Train LoRA confines datasets to the input folder and to output/lora_studio/datasets, where the pictures
    from a graph are saved; elsewhere stays refused."""
    import torch

    studio = lambda *parts: tmp_path.joinpath("lora_studio", *parts)  # noqa: E731
    for mod in ("images", "comfy_bridge", "train"):
        monkeypatch.setattr(importlib.import_module(f"lora_studio_pack.nodes.{mod}"), "studio_dir", studio)
    config = importlib.import_module("lora_studio_pack.trainer.config")
    train = importlib.import_module("lora_studio_pack.nodes.train")
    batch = torch.rand(2, 8, 8, 3).repeat_interleave(8, dim=1).repeat_interleave(8, dim=2)
    data, _ = nodes.DatasetFromImages.execute(batch, "a photo of <my_token>", "sks").result
    cfg = train.train_config(data, config.TrainConfig().to_dict(), "off")
    assert Path(cfg.dataset) == Path(data["root"])
    with pytest.raises(Exception, match="dataset = "):
        train.train_config(dict(data, root=str(tmp_path)), config.TrainConfig().to_dict(), "off")
