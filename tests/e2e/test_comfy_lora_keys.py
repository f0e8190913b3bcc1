"""ComfyUI's own LoRA code takes our files: every key of full-size SD1.5, SD2 and SDXL files, and
core's Load LoRA Model node (type LORA_MODEL) patches a model to what we trained.

No server: ComfyUI's modules (run with COMFYUI_PYTHON's environment) build the models on the meta
device from our shipped real configs, exactly as its checkpoint loader detects them, and
`comfy.lora.load_lora` reads our file's keys as the Load LoRA node does. A full-size SDXL
checkpoint would need ~7 GB of memory; the key maps need none. The numeric check runs ComfyUI's
UNet built from a tiny model's own weights.
"""
from __future__ import annotations

import logging
import os
import sys

import pytest
import torch

from tests.support.full_size_export import export_full_size, load_config, materialise
from trainer.config import TEXT_ENCODER_TARGETS, UNET_TARGETS
from trainer.interop import diffusion_model_part, sgm_unet_module

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


@pytest.mark.parametrize("family,comfy_class", [("sd15", "SD15"), ("sdxl", "SDXL")])
def test_core_load_lora_model_applies_our_lora_model_as_trained(comfy, family, comfy_class, tmp_path, caplog):
    """Our LORA_MODEL (the file's UNet keys) through core's LoraModelLoader == the peft-adapted UNet."""
    import comfy.model_patcher
    import comfy.supported_models
    from comfy_extras.nodes_train import LoraModelLoader

    from tests.support.ldm_export import unet_to_ldm
    from trainer.export import kohya_state_dict
    from trainer.lora import AdapterSpec, adapter_state_dict, inject
    from trainer.models import build_tiny_model, load_base_model

    bm = load_base_model(build_tiny_model(tmp_path / family, family))
    unet = bm.unet.float().eval()
    ldm = unet_to_ldm(unet)  # ComfyUI's UNet with the same base weights, its config read from them
    model_config = getattr(comfy.supported_models, comfy_class)(comfy.model_detection.detect_unet_config(ldm, ""))
    if family == "sdxl":  # head width is not in the weights; SDXL's preset sets 64, the tiny model has less
        c = unet.config
        widths = {ch // heads for ch, heads, kind in zip(c.block_out_channels, c.attention_head_dim, c.down_block_types)
                  if kind.startswith("CrossAttn")}
        assert len(widths) == 1
        model_config.unet_config["num_head_channels"] = widths.pop()
    model = model_config.get_model({}, "", device=torch.device("cpu"))
    model.load_model_weights({"model.diffusion_model." + k: v for k, v in ldm.items()}, "model.diffusion_model.")
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))

    torch.manual_seed(0)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10.0, 700.0])
    ctx = torch.randn(2, 7, unet.config.cross_attention_dim)
    added, extra = None, {}
    if family == "sdxl":  # the added conditioning, given to both UNets in their own form
        text_embeds = torch.randn(2, unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim)
        time_ids = torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2)
        added = {"text_embeds": text_embeds, "time_ids": time_ids}
        extra["y"] = torch.cat([text_embeds, unet.add_time_proj(time_ids.flatten()).reshape(2, -1)], dim=1)
    with torch.no_grad():
        comfy_base = model.diffusion_model(x, timesteps=t, context=ctx, **extra)
        # the two UNets agree before any LoRA, so a difference below is the LoRA's
        torch.testing.assert_close(comfy_base, unet(x, t, ctx, added_cond_kwargs=added).sample, atol=1e-4, rtol=1e-4)

    inject(unet, AdapterSpec(4, 2.0, tuple(UNET_TARGETS)))  # alpha != rank: the scale must be read from .alpha
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.5)  # trained-looking, non-zero updates
    lora_model = diffusion_model_part(kohya_state_dict(family, adapter_state_dict(unet), [], 2.0, torch.float32,
                                                       unet_config=unet.config))
    with torch.no_grad():
        with caplog.at_level(logging.WARNING):
            (patched,) = LoraModelLoader().load_lora_model(patcher, lora_model, 1.0)
        assert [r.getMessage() for r in caplog.records if "not loaded" in r.getMessage().lower()] == []
        assert len(patched.patches) == len({k.split(".", 1)[0] for k in lora_model})
        patched.patch_model()
        comfy_lora = patched.model.diffusion_model(x, timesteps=t, context=ctx, **extra)
        ours = unet(x, t, ctx, added_cond_kwargs=added).sample
    effect = ((comfy_lora - comfy_base).norm() / comfy_base.norm()).item()
    assert effect > 1e-2, "the LoRA changed nothing: the comparison would be vacuous"
    torch.testing.assert_close(comfy_lora, ours, atol=1e-4, rtol=1e-4)
