"""What other tools read from our files.

Module names as kohya's `networks/lora.py` creates them: SGM names for SDXL, diffusers names for
SD1.x/SD2.x, `lora_te*` text-encoder names; checked at full size against a table built from the
architecture, and against diffusers' own SGM reader. modelspec metadata as kohya writes it. Target
sets that another tool would silently ignore are named with the fix."""
from __future__ import annotations

import pytest

from tests.support.full_size_export import TEXT_ENCODERS, export_full_size, load_config
from tests.support.kohya_names import (diffusers_layout, file_module_names, text_encoder_module_names,
                                       transformer_children, unet_module_names)
from trainer.config import TEXT_ENCODER_TARGETS, UNET_TARGETS
from trainer.interop import sgm_unet_module, target_warnings

TE_PREFIXES = {"sd15": ["lora_te"], "sd2": ["lora_te"], "sdxl": ["lora_te1", "lora_te2"]}


def kohya_table(family: str, unet_targets=None, te_targets=None, configs: str | None = None) -> set[str]:
    configs = configs or family
    names = unet_module_names(family, load_config(configs, "unet"), unet_targets)
    if te_targets:
        for prefix, part in zip(TE_PREFIXES[family], TEXT_ENCODERS[family]):
            names |= text_encoder_module_names(prefix, load_config(configs, part)["num_hidden_layers"], te_targets)
    return names


def test_the_table_has_the_module_counts_kohya_reports():
    # kohya logs "create LoRA for U-Net: 192 modules." (SD1.x/2.x) and "722 modules." (SDXL), and
    # 72 text-encoder modules for SD1.5's CLIP-L, 72 + 192 for SDXL's two encoders
    assert len(kohya_table("sd15")) == 192 and len(kohya_table("sd2")) == 192
    assert len(kohya_table("sdxl")) == 722
    assert len(kohya_table("sd15", te_targets=TEXT_ENCODER_TARGETS) - kohya_table("sd15")) == 72
    assert len(kohya_table("sdxl", te_targets=TEXT_ENCODER_TARGETS) - kohya_table("sdxl")) == 72 + 192
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q" in kohya_table("sdxl")
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q" in kohya_table("sd15")


@pytest.mark.parametrize("family,configs", [("sd15", "sd15"), ("sd2", "sd2"), ("sdxl", "sdxl"),
                                            ("sd15", "tiny-sd15"), ("sdxl", "tiny-sdxl")])
def test_full_size_export_names_every_module_as_kohya(family, configs):
    tensors, _ = export_full_size(family, UNET_TARGETS, TEXT_ENCODER_TARGETS, configs=configs)
    ours, table = file_module_names(tensors), kohya_table(family, UNET_TARGETS, TEXT_ENCODER_TARGETS, configs)
    assert ours - table == set() and table - ours == set()
    for module in ours:  # each module is complete: kohya's loader reads down, up and alpha
        assert {f"{module}.lora_down.weight", f"{module}.lora_up.weight", f"{module}.alpha"} <= tensors.keys()


def test_sdxl_sgm_names_read_back_through_diffusers_to_the_same_modules():
    """diffusers' own SGM-to-diffusers key mapper (what load_lora_weights runs) undoes our numbering."""
    from diffusers.configuration_utils import FrozenDict
    from diffusers.loaders.lora_conversion_utils import _maybe_map_sgm_blocks_to_diffusers

    cfg = load_config("sdxl", "unet")
    diffusers_modules = {f"{path}.{child}" for path, depth in diffusers_layout(cfg) for child in transformer_children(depth)}
    assert len(diffusers_modules) == 722
    sgm_keys = {"lora_unet_" + sgm_unet_module(m, cfg).replace(".", "_") + ".lora_down.weight" for m in diffusers_modules}
    mapped = _maybe_map_sgm_blocks_to_diffusers(dict.fromkeys(sgm_keys, 0), FrozenDict(cfg))
    # the mapper renumbers the blocks and leaves the block words to a later plain rename
    words = (("input_blocks", "down_blocks"), ("middle_block", "mid_block"), ("output_blocks", "up_blocks"))
    back = set()
    for k in mapped:
        name = k[len("lora_unet_"):-len(".lora_down.weight")]
        for sgm_word, diffusers_word in words:
            name = name.replace(sgm_word, diffusers_word)
        back.add(name)
    assert back == {m.replace(".", "_") for m in diffusers_modules}


def test_non_attention_unet_modules_are_refused_not_guessed():
    with pytest.raises(ValueError, match="only attention-block modules"):
        sgm_unet_module("down_blocks.1.resnets.0.conv1", load_config("sdxl", "unet"))


@pytest.mark.parametrize("family,unet,te,expect", [
    ("sdxl", ["to_q", "to_k", "to_v", "to_out.0"], ["q_proj", "v_proj"], ["AUTOMATIC1111"]),
    ("sdxl", ["to_q", "to_k", "to_v", "to_out.0"], ["q_proj", "k_proj", "v_proj"], ["AUTOMATIC1111"]),
    ("sdxl", ["to_q", "to_k", "to_v", "to_out.0"], ["q_proj", "k_proj", "v_proj", "out_proj", "fc1"], []),
    ("sdxl", ["to_q", "to_k", "to_v", "to_out.0"], ["fc1", "fc2"], []),  # MLPs are plain Linear layers there
    ("sd15", ["to_q", "to_k", "to_v", "to_out.0"], ["q_proj", "v_proj"], []),  # CLIP-L is not fused
    ("sd15", ["to_q", "to_out.0"], None, ["InvokeAI"]),
    ("sdxl", ["proj_in", "proj_out"], None, ["InvokeAI"]),
    ("sd15", ["to_q", "to_out.0"], ["q_proj"], []),  # the text encoder's attention tells InvokeAI the base
    ("sd15", ["to_v"], None, []),
])
def test_target_sets_other_tools_would_ignore_are_named_with_the_fix(family, unet, te, expect):
    warnings = target_warnings(family, unet, te is not None, te or ["q_proj"])
    assert len(warnings) == len(expect)
    for tool, w in zip(expect, warnings):
        assert w.startswith(tool) and "Fix: add" in w


@pytest.mark.parametrize("family,prediction,arch,pred,impl", [
    ("sd15", "epsilon", "stable-diffusion-v1/lora", "epsilon", "diffusers"),
    ("sd2", "epsilon", "stable-diffusion-v2-512/lora", "epsilon", "diffusers"),
    ("sd2", "v_prediction", "stable-diffusion-v2-768-v/lora", "v", "diffusers"),
    ("sdxl", "epsilon", "stable-diffusion-xl-v1-base/lora", "epsilon", "https://github.com/Stability-AI/generative-models"),
])
def test_modelspec_metadata_as_kohya_writes_it(family, prediction, arch, pred, impl):
    # kohya's library/sai_model_spec.py: SD2 architecture by v-parameterization, prediction "v"/"epsilon",
    # implementation "sgm" (the Stability repository) for SDXL LoRAs, whose keys are SGM names
    from trainer import TrainConfig
    from trainer.export import lora_metadata

    cfg = TrainConfig.from_dict({"base_model": "base.safetensors", "dataset": "d"})
    meta = lora_metadata(family=family, cfg=cfg, base_hash="0" * 64, dataset_hash="1" * 64, n_images=3, steps=1,
                         prediction_type=prediction, name="x")
    assert (meta["modelspec.architecture"], meta["modelspec.prediction_type"], meta["modelspec.implementation"]) == \
        (arch, pred, impl)
    assert meta["ss_v2"] == str(family == "sd2")
    assert all(isinstance(v, str) for v in meta.values())


def test_a_job_with_such_targets_says_so_and_records_it(tmp_path, sample_dataset, tiny_sd15):
    from conftest import tiny_overrides

    from trainer import TrainConfig
    from trainer.job import run_job
    from trainer.loop import Callbacks

    messages = []
    cfg = TrainConfig.from_dict(tiny_overrides(tmp_path, tiny_sd15, sample_dataset, max_train_steps=1,
                                               preview_every=-1, unet_target_modules=["to_q", "to_out.0"]))
    res = run_job(cfg, Callbacks(on_message=messages.append))
    assert len(res.record["warnings"]) == 1 and "InvokeAI" in res.record["warnings"][0]
    assert [m for m in messages if m.startswith("warning: ")] == ["warning: " + res.record["warnings"][0]]
    assert res.lora_path.is_file()  # a warning, not a refusal: ComfyUI and diffusers use the file as it is
