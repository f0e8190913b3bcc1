"""ComfyUI's own LoRA key maps take every key of our full-size SD1.5, SD2 and SDXL files.

No server: ComfyUI's modules (run with COMFYUI_PYTHON's environment) build the models on the meta
device from our shipped real configs, exactly as its checkpoint loader detects them, and
`comfy.lora.load_lora` reads our file's keys as the Load LoRA node does. A full-size SDXL
checkpoint would need ~7 GB of memory; the key maps need none.
"""
from __future__ import annotations

import logging
import os
import sys

import pytest
import torch

from tests.support.full_size_export import export_full_size, load_config, materialise
from trainer.config import TEXT_ENCODER_TARGETS, UNET_TARGETS
from trainer.interop import sgm_unet_module

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def comfy():
    root = os.environ.get("COMFYUI_PATH")
    if not root:
        pytest.skip("COMFYUI_PATH is not set: ComfyUI's LoRA key maps need a ComfyUI source tree (see README)")
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        import comfy.cli_args

        comfy.cli_args.args.cpu = True  # model_management picks its device at import; this machine may have no GPU
        import comfy.lora
        import comfy.model_detection
    except ImportError as e:
        pytest.skip(f"ComfyUI's modules do not import in this Python ({e}): run with COMFYUI_PYTHON")
    return comfy


def _comfy_models(comfy, family):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(load_config(family, "unet"))
    model_config = comfy.model_detection.model_config_from_diffusers_unet(unet.state_dict())
    assert model_config is not None, f"ComfyUI does not recognise the {family} UNet"
    model = model_config.get_model({}, "", device="meta")
    clip = model_config.clip_target({}).clip(device="meta")
    return model, clip


@pytest.mark.parametrize("family,comfy_class", [("sd15", "SD15"), ("sd2", "SD20"), ("sdxl", "SDXL")])
def test_every_key_of_our_file_is_loaded_by_comfyui(comfy, family, comfy_class, caplog):
    model, clip = _comfy_models(comfy, family)
    assert type(model.model_config).__name__ == comfy_class
    key_map = comfy.lora.model_lora_keys_clip(clip, comfy.lora.model_lora_keys_unet(model, {}))
    tensors, _ = export_full_size(family, UNET_TARGETS, TEXT_ENCODER_TARGETS)
    with caplog.at_level(logging.WARNING):
        patches = comfy.lora.load_lora(materialise(tensors), key_map)
    not_loaded = [r.getMessage() for r in caplog.records if "lora key not loaded" in r.getMessage()]
    assert not_loaded == []
    modules = {k.split(".", 1)[0] for k in tensors}
    assert len(patches) == len(modules)


def test_sdxl_sgm_names_hit_the_modules_comfyui_maps_the_diffusers_names_to(comfy):
    """ComfyUI maps diffusers names to its (SGM) UNet with its own table: our numbering must agree."""
    model, _ = _comfy_models(comfy, "sdxl")
    key_map = comfy.lora.model_lora_keys_unet(model, {})
    cfg = load_config("sdxl", "unet")
    from tests.support.kohya_names import diffusers_layout, transformer_children

    modules = [f"{path}.{child}" for path, depth in diffusers_layout(cfg) for child in transformer_children(depth)]
    assert len(modules) == 722
    wrong = [m for m in modules
             if key_map["lora_unet_" + sgm_unet_module(m, cfg).replace(".", "_")] != key_map["lora_unet_" + m.replace(".", "_")]]
    assert wrong == []
