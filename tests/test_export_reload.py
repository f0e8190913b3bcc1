"""The exported file is what every loader reads: kohya keys with .alpha, and diffusers' own
`load_lora_weights` reproduces the trained model's outputs (UNet and text encoders)."""
from __future__ import annotations

import pytest
import torch
from conftest import tiny_overrides
from safetensors import safe_open

from trainer import TrainConfig
from trainer.encode import encode_tokens, tokenize
from trainer.job import run_job
from trainer.models import load_base_model
from tests.support.kohya_names import file_module_names, text_encoder_module_names, unet_module_names


def _pipeline(family, base_dir):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    bm = load_base_model(base_dir)
    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(vae=bm.vae, text_encoder=bm.text_encoders[0], text_encoder_2=bm.text_encoders[1],
                                         tokenizer=bm.tokenizers[0], tokenizer_2=bm.tokenizers[1], unet=bm.unet,
                                         scheduler=bm.scheduler)
    else:
        pipe = StableDiffusionPipeline(vae=bm.vae, text_encoder=bm.text_encoders[0], tokenizer=bm.tokenizers[0],
                                       unet=bm.unet, scheduler=bm.scheduler, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    return bm, pipe


def _unet_out(bm, unet, family, embeds, pooled):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([10, 700])
    added = None
    if family == "sdxl":
        added = {"text_embeds": pooled, "time_ids": torch.tensor([[64, 64, 0, 0, 64, 64]] * 2, dtype=torch.float32)}
    with torch.no_grad():
        return unet(x, t, embeds, added_cond_kwargs=added).sample


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_reload_through_diffusers_matches_trained_model(family, tmp_path, sample_dataset, request):
    base = request.getfixturevalue(f"tiny_{family}")
    cfg = TrainConfig.from_dict(tiny_overrides(tmp_path, base, sample_dataset, max_train_steps=6,
                                               train_text_encoder=True, learning_rate=5e-3))
    res = run_job(cfg, keep_model=True)
    trained = res.base
    for m in [trained.unet, *trained.text_encoders]:
        m.float().eval()

    # every key is kohya-form and each module carries its alpha
    with safe_open(str(res.lora_path), "pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
    prefixes = ("lora_unet_", "lora_te1_", "lora_te2_") if family == "sdxl" else ("lora_unet_", "lora_te_")
    assert keys and all(k.startswith(prefixes) for k in keys)
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in keys}
    for mod in modules:
        assert {f"{mod}.lora_down.weight", f"{mod}.lora_up.weight", f"{mod}.alpha"} <= keys, mod
    assert any(k.startswith(prefixes[1]) for k in keys), "text encoder LoRA missing"
    assert meta["ss_network_dim"] == "8" and meta["ss_base_model_version"].startswith(("sd_v1", "sdxl"))

    # exactly the modules kohya's networks/lora.py creates for this architecture and these targets
    # (SGM block names for SDXL): nothing unmatched either way
    table = unet_module_names(family, trained.unet.config, cfg.unet_target_modules)
    for prefix, te in zip(prefixes[1:], trained.text_encoders):
        table |= text_encoder_module_names(prefix.rstrip("_"), te.config.num_hidden_layers,
                                           cfg.text_encoder_target_modules)
    assert file_module_names(keys) == table
    if family == "sdxl":
        assert any(k.startswith("lora_unet_input_blocks_") for k in keys)
        assert not any(k.startswith(("lora_unet_down_blocks", "lora_unet_up_blocks", "lora_unet_mid_block")) for k in keys)

    _, pipe = _pipeline(family, base)
    pipe.load_lora_weights(str(res.lora_path))

    prompts = ["watercolor painting of wcfox fox", "a red house"]
    ids = tokenize(trained, prompts)
    with torch.no_grad():
        emb_trained, pooled_trained = encode_tokens(trained, ids)
        reloaded_encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if family == "sdxl" else [])
        emb_reloaded, pooled_reloaded = encode_tokens(trained, ids, reloaded_encoders)
    torch.testing.assert_close(emb_reloaded, emb_trained, atol=1e-4, rtol=0)
    # the LoRA changed something, so the comparison above is not vacuous
    bm_plain = load_base_model(base)
    with torch.no_grad():
        emb_plain, _ = encode_tokens(bm_plain, ids)
    assert (emb_plain - emb_trained).abs().max() > 1e-3

    out_trained = _unet_out(trained, trained.unet, family, emb_trained, pooled_trained)
    out_reloaded = _unet_out(trained, pipe.unet, family, emb_trained, pooled_trained)
    assert (out_trained - out_reloaded).abs().max().item() <= 1e-4
    out_plain = _unet_out(bm_plain, bm_plain.unet, family, emb_trained, pooled_trained)
    assert (out_plain - out_trained).abs().max().item() > 1e-3
