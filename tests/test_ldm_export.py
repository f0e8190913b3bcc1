"""Round trip: diffusers models -> our LDM export -> diffusers' own LDM importers -> same outputs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402
from diffusers.loaders import single_file_utils as sfu  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402

from tests.support import sd_configs as C  # noqa: E402
from tests.support.ldm_export import (  # noqa: E402
    diffusers_to_ldm_state_dict,
    normalize_clip_keys,
    save_ldm_checkpoint,
)


def _seeded(factory, seed):
    torch.manual_seed(seed)
    model = factory()
    # Random non-zero values everywhere (norm weights/biases, zero-initialised output convs...), so a
    # swapped or dropped tensor cannot hide behind a default initialisation.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and name.endswith("weight"):  # norm scales
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def _load_into(model, sd):
    """Load a converted state dict strictly; CLIPTextModel may be flattened (transformers >= 5.6)."""
    own = set(model.state_dict())
    if not any(k.startswith("text_model.") for k in own) and any(k.startswith("text_model.") for k in sd):
        sd = {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not k.endswith("position_ids")}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    assert not missing and not unexpected, (missing[:10], unexpected[:10])
    return model.eval()


def _unet(cfg):
    return UNet2DConditionModel.from_config(C.config(cfg))


def _vae(cfg=C.TINY_VAE_CONFIG):
    return AutoencoderKL.from_config(C.config(cfg))


def _clip_l():
    return CLIPTextModel(CLIPTextConfig(**C.TINY_CLIP_L_TEXT_CONFIG))


def _clip_g():
    return CLIPTextModelWithProjection(CLIPTextConfig(**C.TINY_CLIP_G_TEXT_CONFIG))


def _check_unet(unet, ckpt, cfg, added_cond_kwargs=None):
    back = sfu.convert_ldm_unet_checkpoint(ckpt, C.config(cfg))
    fresh = _load_into(_unet(cfg), back)
    torch.manual_seed(1)
    x = torch.randn(2, 4, 16, 16)
    ctx = torch.randn(2, 7, cfg["cross_attention_dim"])
    t = torch.tensor([10, 500])
    with torch.no_grad():
        a = unet(x, t, ctx, added_cond_kwargs=added_cond_kwargs).sample
        b = fresh(x, t, ctx, added_cond_kwargs=added_cond_kwargs).sample
    assert a.abs().mean() > 0
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def _check_vae(vae, ckpt):
    back = sfu.convert_ldm_vae_checkpoint(ckpt, C.config(C.TINY_VAE_CONFIG))
    fresh = _load_into(_vae(), back)
    torch.manual_seed(2)
    img = torch.rand(1, 3, 32, 32) * 2 - 1
    z = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(vae.decode(z).sample, fresh.decode(z).sample, rtol=0, atol=0)
        torch.testing.assert_close(vae.encode(img).latent_dist.mean, fresh.encode(img).latent_dist.mean, rtol=0, atol=0)


def _ids():
    ids = torch.tensor([[0, 5, 17, 300, 2, 1, 1], [0, 9, 2, 1, 1, 1, 1]])
    return ids


def _check_clip_l(te, ckpt, prefix):
    back = sfu.convert_ldm_clip_checkpoint({k: v for k, v in ckpt.items() if k.startswith(prefix)})
    fresh = _load_into(_clip_l(), back)
    with torch.no_grad():
        a, b = te(_ids(), output_hidden_states=True), fresh(_ids(), output_hidden_states=True)
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, rtol=0, atol=0)
    torch.testing.assert_close(a.hidden_states[-2], b.hidden_states[-2], rtol=0, atol=0)


@pytest.mark.parametrize("layers_per_block", [1, 2])
def test_sd15_shaped_round_trip(layers_per_block):
    cfg = dict(C.TINY_SD15_UNET_CONFIG, layers_per_block=layers_per_block)
    unet = _seeded(lambda: _unet(cfg), 0)
    vae = _seeded(_vae, 1)
    te = _seeded(_clip_l, 2)
    ckpt = diffusers_to_ldm_state_dict(unet, vae, te)

    # Exactly one LDM key per diffusers tensor, nothing dropped or merged.
    n_te = len(normalize_clip_keys(te))
    assert len(ckpt) == len(unet.state_dict()) + len(vae.state_dict()) + n_te
    assert all(k.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model."))
               for k in ckpt)
    # Landmarks of the LDM layout.
    lpb = layers_per_block
    assert "model.diffusion_model.input_blocks.0.0.weight" in ckpt
    assert f"model.diffusion_model.input_blocks.{lpb + 1}.0.op.weight" in ckpt
    assert "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight" in ckpt
    assert "model.diffusion_model.middle_block.1.proj_in.weight" in ckpt
    assert "model.diffusion_model.middle_block.2.in_layers.0.weight" in ckpt
    assert f"model.diffusion_model.output_blocks.{lpb}.1.conv.weight" in ckpt  # up_blocks.0 has no attention
    assert f"model.diffusion_model.output_blocks.{2 * (lpb + 1) - 1}.2.conv.weight" in ckpt
    assert "model.diffusion_model.time_embed.2.weight" in ckpt
    assert "model.diffusion_model.out.2.weight" in ckpt
    assert ckpt["first_stage_model.decoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)
    assert ckpt["first_stage_model.encoder.mid.attn_1.proj_out.weight"].shape == (64, 64, 1, 1)
    assert "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight" in ckpt  # diffusers up_blocks.1
    assert "first_stage_model.decoder.up.1.upsample.conv.weight" in ckpt  # diffusers up_blocks.0
    assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in ckpt
    assert "cond_stage_model.transformer.text_model.encoder.layers.2.mlp.fc2.bias" in ckpt

    _check_unet(unet, ckpt, cfg)
    _check_vae(vae, ckpt)
    _check_clip_l(te, ckpt, "cond_stage_model.transformer.")


def test_sdxl_shaped_round_trip():
    cfg = C.TINY_SDXL_UNET_CONFIG
    unet = _seeded(lambda: _unet(cfg), 0)
    vae = _seeded(_vae, 1)
    te1 = _seeded(_clip_l, 2)
    te2 = _seeded(_clip_g, 3)
    ckpt = diffusers_to_ldm_state_dict(unet, vae, te1, te2)

    assert "model.diffusion_model.label_emb.0.0.weight" in ckpt
    assert "model.diffusion_model.label_emb.0.2.bias" in ckpt
    assert "model.diffusion_model.input_blocks.3.1.transformer_blocks.1.ff.net.2.weight" in ckpt
    assert "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight" in ckpt
    g = "conditioner.embedders.1.model."
    hid = C.TINY_CLIP_G_TEXT_CONFIG["hidden_size"]
    assert ckpt[g + "transformer.resblocks.1.attn.in_proj_weight"].shape == (3 * hid, hid)
    assert ckpt[g + "transformer.resblocks.1.attn.in_proj_bias"].shape == (3 * hid,)
    for name in ("attn.out_proj.weight", "ln_1.bias", "ln_2.weight", "mlp.c_fc.weight", "mlp.c_proj.bias"):
        assert g + "transformer.resblocks.0." + name in ckpt
    for name in ("ln_final.weight", "positional_embedding", "token_embedding.weight", "text_projection"):
        assert g + name in ckpt
    torch.testing.assert_close(ckpt[g + "text_projection"], te2.text_projection.weight.t())
    assert not any(k.startswith("cond_stage_model.") for k in ckpt)

    pooled = torch.randn(2, C.TINY_CLIP_G_TEXT_CONFIG["projection_dim"])
    time_ids = torch.tensor([[32.0, 32, 0, 0, 32, 32]] * 2)
    _check_unet(unet, ckpt, cfg, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids})
    _check_vae(vae, ckpt)
    _check_clip_l(te1, ckpt, "conditioner.embedders.0.transformer.")

    fresh2 = _clip_g()
    back2 = sfu.convert_open_clip_checkpoint(fresh2, ckpt, prefix=g)
    _load_into(fresh2, back2)
    with torch.no_grad():
        a, b = te2(_ids(), output_hidden_states=True), fresh2(_ids(), output_hidden_states=True)
    torch.testing.assert_close(a.text_embeds, b.text_embeds, rtol=0, atol=0)
    torch.testing.assert_close(a.hidden_states[-2], b.hidden_states[-2], rtol=0, atol=0)


def test_flattened_and_wrapped_clip_keys_agree():
    te = _seeded(_clip_l, 2)
    flat_or_not = normalize_clip_keys(te)
    assert all(k.startswith("text_model.") for k in flat_or_not)
    wrapped = normalize_clip_keys({"text_model." + k if not k.startswith("text_model.") else k: v
                                   for k, v in te.state_dict().items()})
    assert flat_or_not.keys() == wrapped.keys()


def test_real_sd15_key_count_on_meta_device():
    """The real SD1.5 architecture maps onto the known single-file key set (686 UNet, 248 VAE, 196 CLIP)."""
    with torch.device("meta"):
        unet = _unet(C.SD15_UNET_CONFIG)
        vae = _vae(C.SD15_VAE_CONFIG)
        te = CLIPTextModel(CLIPTextConfig(**C.SD15_TEXT_ENCODER_CONFIG))
    ckpt = diffusers_to_ldm_state_dict(unet, vae, te)
    count = lambda p: sum(k.startswith(p) for k in ckpt)  # noqa: E731
    assert count("model.diffusion_model.") == 686
    assert count("first_stage_model.") == 248
    assert count("cond_stage_model.transformer.text_model.") == 196  # + position_ids in the originals
    for k in ("model.diffusion_model.output_blocks.2.1.conv.weight",
              "model.diffusion_model.output_blocks.5.2.conv.weight",
              "model.diffusion_model.output_blocks.8.2.conv.weight",
              "model.diffusion_model.input_blocks.9.0.op.weight",
              "model.diffusion_model.input_blocks.11.0.out_layers.3.weight",
              "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm3.weight",
              "first_stage_model.decoder.up.3.block.2.conv2.weight",
              "first_stage_model.encoder.down.3.block.1.norm2.bias",
              "first_stage_model.quant_conv.weight"):
        assert k in ckpt, k
    assert tuple(ckpt["first_stage_model.encoder.mid.attn_1.k.weight"].shape) == (512, 512, 1, 1)


def test_save_ldm_checkpoint_casts_floats(tmp_path):
    from safetensors.torch import load_file

    sd = {"a": torch.randn(3, 3), "ids": torch.arange(5)}
    path = save_ldm_checkpoint(tmp_path / "x.safetensors", sd, dtype=torch.float16)
    back = load_file(path)
    assert back["a"].dtype == torch.float16 and back["ids"].dtype == torch.int64
    torch.testing.assert_close(back["a"], sd["a"].half())
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]
