"""Base models load offline: single files in the original LDM layout, diffusers folders; others are refused clearly."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from support.ldm_export import diffusers_to_ldm_state_dict, save_ldm_checkpoint

from trainer import ModelLoadError
from trainer.encode import encode_tokens, tokenize
from trainer.models import load_base_model
from trainer.models.load import CONFIG_ROOT


def _ldm_file(base_dir, family, path):
    bm = load_base_model(base_dir)
    sd = diffusers_to_ldm_state_dict(bm.unet, bm.vae, *bm.text_encoders)
    save_ldm_checkpoint(path, sd)
    return bm


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_single_ldm_file_loads_with_network_blocked(family, tmp_path, request):
    # conftest blocks every non-loopback socket and sets HF_HUB_OFFLINE: a hub fetch would fail the test
    base = request.getfixturevalue(f"tiny_{family}")
    ref = _ldm_file(base, family, tmp_path / "model.safetensors")
    keys = set(__import__("safetensors.torch", fromlist=["load_file"]).load_file(str(tmp_path / "model.safetensors")))
    assert any(k.startswith("model.diffusion_model.input_blocks.") for k in keys)  # really the LDM layout
    bm = load_base_model(tmp_path / "model.safetensors", config_dir=str(CONFIG_ROOT / f"tiny-{family}"),
                         tokenizer_dir=str(base / "tokenizer"))
    assert bm.family == family
    ids = tokenize(bm, ["a watercolor fox"])
    with torch.no_grad():
        e1, p1 = encode_tokens(bm, ids)
        e0, p0 = encode_tokens(ref, ids)
        torch.testing.assert_close(e1, e0, atol=1e-5, rtol=0)
        x, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
        added = {"text_embeds": p0, "time_ids": torch.tensor([[64., 64, 0, 0, 64, 64]])} if family == "sdxl" else None
        torch.testing.assert_close(bm.unet(x, t, e0, added_cond_kwargs=added).sample,
                                   ref.unet(x, t, e0, added_cond_kwargs=added).sample, atol=1e-5, rtol=0)
        img = torch.rand(1, 3, 64, 64) * 2 - 1
        torch.testing.assert_close(bm.vae.encode(img).latent_dist.mode(), ref.vae.encode(img).latent_dist.mode(),
                                   atol=1e-5, rtol=0)


def test_ckpt_is_read_without_unpickling_code(tmp_path, tiny_sd15):
    bm = load_base_model(tiny_sd15)
    sd = diffusers_to_ldm_state_dict(bm.unet, bm.vae, *bm.text_encoders)
    torch.save({"state_dict": sd}, tmp_path / "model.ckpt")
    again = load_base_model(tmp_path / "model.ckpt", config_dir=str(CONFIG_ROOT / "tiny-sd15"),
                            tokenizer_dir=str(tiny_sd15 / "tokenizer"))
    assert again.family == "sd15"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": {"x": Evil()}}, tmp_path / "evil.ckpt")
    with pytest.raises(ModelLoadError, match="Could not read 'evil.ckpt'"):
        load_base_model(tmp_path / "evil.ckpt")


@pytest.mark.parametrize("key,what", [
    ("model.diffusion_model.joint_blocks.0.context_block.attn.qkv.weight", "SD 3"),
    ("double_blocks.0.img_attn.qkv.weight", "Flux"),
    ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", "a LoRA"),
    ("conditioner.embedders.0.model.transformer.resblocks.0.attn.in_proj_weight", "refiner"),
    ("some.random.weight", "not a Stable Diffusion checkpoint"),
])
def test_unsupported_checkpoint_is_named(key, what, tmp_path):
    save_file({key: torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelLoadError) as e:
        load_base_model(tmp_path / "other.safetensors")
    assert what in str(e.value) and "SD 1.5" in str(e.value) and "SDXL" in str(e.value)


def test_family_mismatch_and_config_mismatch(tmp_path, tiny_sd15):
    _ldm_file(tiny_sd15, "sd15", tmp_path / "m.safetensors")
    with pytest.raises(ModelLoadError, match="model_type"):
        load_base_model(tmp_path / "m.safetensors", model_type="sdxl")
    # the shipped real-size SD 1.5 configs don't fit a tiny checkpoint: an error, not a half-loaded model
    with pytest.raises(ModelLoadError, match="does not match its config"):
        load_base_model(tmp_path / "m.safetensors", tokenizer_dir=str(tiny_sd15 / "tokenizer"))


def test_missing_model_and_missing_tokenizer(tmp_path, tiny_sd15, monkeypatch):
    with pytest.raises(ModelLoadError, match="not found"):
        load_base_model(tmp_path / "nope.safetensors")
    with pytest.raises(ModelLoadError, match="No base model given"):
        load_base_model("")
    _ldm_file(tiny_sd15, "sd15", tmp_path / "m.safetensors")
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    import trainer.models.tokenizers as tk

    monkeypatch.setattr(tk, "candidate_dirs", lambda explicit="", near=None: [tmp_path / "none"])
    with pytest.raises(ModelLoadError, match="comfy/sd1_tokenizer"):
        load_base_model(tmp_path / "m.safetensors", config_dir=str(CONFIG_ROOT / "tiny-sd15"))


def test_shipped_real_configs_build_the_real_architectures():
    """The configs that single files are converted against have the real parameter counts."""
    import json

    from diffusers import UNet2DConditionModel
    from accelerate import init_empty_weights

    counts = {}
    for fam in ("sd15", "sd2", "sdxl"):
        with init_empty_weights():
            u = UNet2DConditionModel.from_config(json.loads((CONFIG_ROOT / fam / "unet" / "config.json").read_text()))
        counts[fam] = sum(p.numel() for p in u.parameters())
    assert 859e6 < counts["sd15"] < 860e6 and 865e6 < counts["sd2"] < 866e6 and 2.56e9 < counts["sdxl"] < 2.57e9


def test_sd2_single_file_loads_as_v_prediction(tmp_path):
    """SD 2.x: OpenCLIP-H text encoder under cond_stage_model.model., v-prediction unless named a 512/base model."""
    from support.ldm_export import _prefixed, open_clip_to_ldm, unet_to_ldm, vae_to_ldm

    from trainer.models import build_tiny_model

    folder = build_tiny_model(tmp_path / "tiny-sd2", "sd2")
    ref = load_base_model(folder)
    assert ref.family == "sd2" and ref.prediction_type == "v_prediction"
    sd = {**_prefixed("model.diffusion_model.", unet_to_ldm(ref.unet)), **_prefixed("first_stage_model.", vae_to_ldm(ref.vae)),
          **_prefixed("cond_stage_model.model.", open_clip_to_ldm(ref.text_encoders[0]))}
    save_ldm_checkpoint(tmp_path / "v2-1_768.safetensors", sd)
    bm = load_base_model(tmp_path / "v2-1_768.safetensors", config_dir=str(CONFIG_ROOT / "tiny-sd2"),
                         tokenizer_dir=str(folder / "tokenizer"))
    assert bm.family == "sd2" and bm.prediction_type == "v_prediction"
    assert bm.tokenizers[0].pad_token == "!"  # OpenCLIP pads with "!" (id 0), unlike SD 1.x
    ids = tokenize(bm, ["a watercolor fox"])
    with torch.no_grad():
        torch.testing.assert_close(encode_tokens(bm, ids)[0], encode_tokens(ref, ids)[0], atol=1e-5, rtol=0)
        x, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
        e = encode_tokens(ref, ids)[0]
        torch.testing.assert_close(bm.unet(x, t, e).sample, ref.unet(x, t, e).sample, atol=1e-5, rtol=0)
    # without a config_dir the file name decides, as the weights cannot tell
    from trainer.models.load import sd2_prediction_type

    assert sd2_prediction_type("v2-1_768-ema-pruned") == "v_prediction"
    assert sd2_prediction_type("v2-1_512-ema-pruned") == "epsilon"
    assert sd2_prediction_type("sd2-base") == "epsilon"


def test_v_prediction_model_trains_and_its_loss_falls(tmp_path, sample_dataset):
    from conftest import tiny_overrides

    from trainer import TrainConfig
    from trainer.job import run_job
    from trainer.models import build_tiny_model

    folder = build_tiny_model(tmp_path / "tiny-sd2", "sd2")
    res = run_job(TrainConfig.from_dict(tiny_overrides(tmp_path, folder, sample_dataset, preview_every=-1,
                                                       snr_gamma=5.0)))
    m = res.record["metrics"]
    assert res.record["base_model"]["prediction_type"] == "v_prediction"
    from safetensors import safe_open

    with safe_open(str(res.lora_path), "pt") as f:  # metadata as kohya writes it for a v-prediction SD2 LoRA
        meta = f.metadata()
    assert meta["modelspec.architecture"] == "stable-diffusion-v2-768-v/lora"
    assert meta["modelspec.prediction_type"] == "v" and meta["ss_v2"] == "True"
    assert m["eval_loss_after"] < 0.9 * m["eval_loss_before"], (m["eval_loss_before"], m["eval_loss_after"])
