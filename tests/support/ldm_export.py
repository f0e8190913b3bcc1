"""Export diffusers-format Stable Diffusion components to the original LDM single-file layout.

This is the layout of the ``.safetensors`` checkpoints that ComfyUI loads from ``models/checkpoints``:

* UNet under ``model.diffusion_model.`` (``input_blocks`` / ``middle_block`` / ``output_blocks`` /
  ``time_embed`` / ``label_emb`` / ``out``),
* VAE under ``first_stage_model.`` (``encoder.down.{i}.block.{j}``, ``decoder.up.{i}`` numbered from the
  bottom, mid attention ``q/k/v/proj_out`` as 1x1 convs),
* SD1.x: CLIP-L under ``cond_stage_model.transformer.text_model.``,
* SDXL: CLIP-L under ``conditioner.embedders.0.transformer.text_model.`` and the OpenCLIP bigG
  (``CLIPTextModelWithProjection``) under ``conditioner.embedders.1.model.`` in OpenCLIP naming.

The mapping is derived from the module structure that is actually present (the state-dict keys), so it
works for any config sizes: tiny test UNets with two levels and one layer per block as well as the real
SD1.5/SDXL sizes. Every input key must map; an unknown key raises ``KeyError`` instead of being dropped.

Test-support code only: used to build checkpoints with random weights for end-to-end tests.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "diffusers_to_ldm_state_dict",
    "unet_to_ldm",
    "vae_to_ldm",
    "clip_to_ldm",
    "open_clip_to_ldm",
    "normalize_clip_keys",
    "save_ldm_checkpoint",
]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_CLIP_PREFIX = "cond_stage_model.transformer."
SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
SDXL_CLIP_G_PREFIX = "conditioner.embedders.1.model."


def _state_dict(obj: Any) -> dict[str, Tensor]:
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"expected an nn.Module or a state dict, got {type(obj).__name__}")


def _indices(keys, pattern: str) -> list[int]:
    """Sorted distinct integers captured by ``pattern`` (a regex with one group) at the start of keys."""
    rx = re.compile(pattern)
    found = set()
    for k in keys:
        m = rx.match(k)
        if m:
            found.add(int(m.group(1)))
    return sorted(found)


def _has_prefix(keys, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)


class _PrefixMap:
    """Maps keys by longest matching prefix; the remainder may be rewritten by a per-entry function."""

    def __init__(self) -> None:
        self._entries: list[tuple[str, str, Any]] = []

    def add(self, src: str, dst: str, tail=None) -> None:
        self._entries.append((src, dst, tail))

    def __call__(self, key: str) -> str:
        best = None
        for src, dst, tail in self._entries:
            if key.startswith(src) and (best is None or len(src) > len(best[0])):
                best = (src, dst, tail)
        if best is None:
            raise KeyError(f"no LDM mapping for key {key!r}")
        src, dst, tail = best
        rest = key[len(src):]
        if tail is not None:
            rest = tail(rest)
        return dst + rest


# ----------------------------------------------------------------------------------------- UNet

_UNET_RESNET_RENAMES = {
    "norm1.": "in_layers.0.",
    "conv1.": "in_layers.2.",
    "time_emb_proj.": "emb_layers.1.",
    "norm2.": "out_layers.0.",
    "conv2.": "out_layers.3.",
    "conv_shortcut.": "skip_connection.",
}


def _renamed(rest: str, renames: dict[str, str], what: str) -> str:
    for src, dst in renames.items():
        if rest.startswith(src):
            return dst + rest[len(src):]
    raise KeyError(f"unknown {what} parameter {rest!r}")


def _unet_resnet_tail(rest: str) -> str:
    return _renamed(rest, _UNET_RESNET_RENAMES, "UNet resnet")


def unet_to_ldm(unet: Any) -> dict[str, Tensor]:
    """UNet2DConditionModel (or its state dict) -> LDM ``openaimodel`` keys, without a prefix."""
    sd = _state_dict(unet)
    keys = list(sd)
    pm = _PrefixMap()

    for src, dst in [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("add_embedding.linear_1.", "label_emb.0.0."),
        ("add_embedding.linear_2.", "label_emb.0.2."),
        ("class_embedding.linear_1.", "label_emb.0.0."),
        ("class_embedding.linear_2.", "label_emb.0.2."),
        ("conv_in.", "input_blocks.0.0."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
    ]:
        pm.add(src, dst)

    # Down path: input_blocks.0 is conv_in; then per level one block per resnet (+ its attention),
    # then one block for the downsampler.
    n = 1
    for i in _indices(keys, r"down_blocks\.(\d+)\."):
        for j in _indices(keys, rf"down_blocks\.{i}\.resnets\.(\d+)\."):
            pm.add(f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{n}.0.", _unet_resnet_tail)
            if _has_prefix(keys, f"down_blocks.{i}.attentions.{j}."):
                pm.add(f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{n}.1.")
            n += 1
        if _has_prefix(keys, f"down_blocks.{i}.downsamplers.0."):
            pm.add(f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{n}.0.op.")
            n += 1

    # Middle: res, attn, res, (attn, res)...
    mid_attn = _indices(keys, r"mid_block\.attentions\.(\d+)\.")
    for k in _indices(keys, r"mid_block\.resnets\.(\d+)\."):
        pm.add(f"mid_block.resnets.{k}.", f"middle_block.{2 * k if mid_attn else k}.", _unet_resnet_tail)
    for k in mid_attn:
        pm.add(f"mid_block.attentions.{k}.", f"middle_block.{2 * k + 1}.")

    # Up path: one output block per resnet (+ attention); the upsampler joins the level's last block.
    m = 0
    for i in _indices(keys, r"up_blocks\.(\d+)\."):
        res = _indices(keys, rf"up_blocks\.{i}\.resnets\.(\d+)\.")
        for j in res:
            pm.add(f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{m}.0.", _unet_resnet_tail)
            has_attn = _has_prefix(keys, f"up_blocks.{i}.attentions.{j}.")
            if has_attn:
                pm.add(f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{m}.1.")
            if j == res[-1] and _has_prefix(keys, f"up_blocks.{i}.upsamplers.0."):
                pm.add(f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{m}.{2 if has_attn else 1}.")
            m += 1

    return {pm(k): v for k, v in sd.items()}


# ------------------------------------------------------------------------------------------ VAE

_VAE_ATTN_RENAMES = {
    "group_norm.": "norm.",
    "to_q.": "q.",
    "to_k.": "k.",
    "to_v.": "v.",
    "to_out.0.": "proj_out.",
    # pre-0.14 diffusers attention naming
    "query.": "q.",
    "key.": "k.",
    "value.": "v.",
    "proj_attn.": "proj_out.",
}


def _vae_resnet_tail(rest: str) -> str:
    # rest is "conv_shortcut.weight" (mid block) or "{j}.conv_shortcut.weight" (level blocks)
    return re.sub(r"(^|\.)conv_shortcut\.", r"\1nin_shortcut.", rest)


def _vae_attn_tail(rest: str) -> str:
    return _renamed(rest, _VAE_ATTN_RENAMES, "VAE attention")


def vae_to_ldm(vae: Any) -> dict[str, Tensor]:
    """AutoencoderKL (or its state dict) -> LDM VAE keys, without a prefix."""
    sd = _state_dict(vae)
    keys = list(sd)
    pm = _PrefixMap()
    for side in ("encoder", "decoder"):
        pm.add(f"{side}.conv_in.", f"{side}.conv_in.")
        pm.add(f"{side}.conv_out.", f"{side}.conv_out.")
        pm.add(f"{side}.conv_norm_out.", f"{side}.norm_out.")
        for k in _indices(keys, rf"{side}\.mid_block\.resnets\.(\d+)\."):
            pm.add(f"{side}.mid_block.resnets.{k}.", f"{side}.mid.block_{k + 1}.", _vae_resnet_tail)
        for k in _indices(keys, rf"{side}\.mid_block\.attentions\.(\d+)\."):
            pm.add(f"{side}.mid_block.attentions.{k}.", f"{side}.mid.attn_{k + 1}.", _vae_attn_tail)
    pm.add("quant_conv.", "quant_conv.")
    pm.add("post_quant_conv.", "post_quant_conv.")

    for i in _indices(keys, r"encoder\.down_blocks\.(\d+)\."):
        pm.add(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.", _vae_resnet_tail)
        pm.add(f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.")

    ups = _indices(keys, r"decoder\.up_blocks\.(\d+)\.")
    for i in ups:
        ldm_i = len(ups) - 1 - i  # LDM numbers decoder levels from the lowest resolution up
        pm.add(f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{ldm_i}.block.", _vae_resnet_tail)
        pm.add(f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{ldm_i}.upsample.")

    out = {}
    for k, v in sd.items():
        new = pm(k)
        # LDM's VAE attention projections are 1x1 convolutions.
        if re.search(r"\.mid\.attn_\d+\.(q|k|v|proj_out)\.weight$", new) and v.ndim == 2:
            v = v.reshape(*v.shape, 1, 1)
        out[new] = v
    return out


# -------------------------------------------------------------------------------- text encoders


def normalize_clip_keys(text_encoder: Any) -> dict[str, Tensor]:
    """State dict of a CLIP text model with every transformer key under ``text_model.``.

    transformers >= 5.6 flattened ``CLIPTextModel`` (``embeddings.…``, ``encoder.layers.…``,
    ``final_layer_norm.…``) while ``CLIPTextModelWithProjection`` keeps ``text_model.…`` and a top-level
    ``text_projection.weight``. Both come out in the ``text_model.``-prefixed form.
    """
    out = {}
    for k, v in _state_dict(text_encoder).items():
        if k.endswith("position_ids"):
            continue  # a buffer, not a weight; LDM checkpoints may or may not carry it
        if not (k.startswith("text_model.") or k.startswith("text_projection.")):
            k = "text_model." + k
        out[k] = v
    return out


def clip_to_ldm(text_encoder: Any) -> dict[str, Tensor]:
    """CLIP-L (HF naming) -> the ``transformer.``-relative keys LDM uses (``text_model.…``)."""
    return normalize_clip_keys(text_encoder)


_OPEN_CLIP_LAYER_RENAMES = {
    "layer_norm1.": "ln_1.",
    "layer_norm2.": "ln_2.",
    "mlp.fc1.": "mlp.c_fc.",
    "mlp.fc2.": "mlp.c_proj.",
    "self_attn.out_proj.": "attn.out_proj.",
}


def open_clip_to_ldm(text_encoder: Any) -> dict[str, Tensor]:
    """CLIPTextModelWithProjection (HF naming) -> OpenCLIP keys (relative to ``…embedders.1.model.``)."""
    sd = normalize_clip_keys(text_encoder)
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, Tensor]] = {}
    layer_rx = re.compile(r"text_model\.encoder\.layers\.(\d+)\.(.*)$")
    fixed = {
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
    }
    for k, v in sd.items():
        if k in fixed:
            out[fixed[k]] = v
            continue
        if k == "text_projection.weight":
            # HF Linear weight is [proj, hidden]; OpenCLIP multiplies x @ text_projection ([hidden, proj]).
            out["text_projection"] = v.t().contiguous()
            continue
        m = layer_rx.match(k)
        if not m:
            raise KeyError(f"no OpenCLIP mapping for key {k!r}")
        idx, rest = int(m.group(1)), m.group(2)
        qm = re.match(r"self_attn\.([qkv])_proj\.(weight|bias)$", rest)
        if qm:
            qkv.setdefault((idx, qm.group(2)), {})[qm.group(1)] = v
            continue
        for src, dst in _OPEN_CLIP_LAYER_RENAMES.items():
            if rest.startswith(src):
                out[f"transformer.resblocks.{idx}.{dst}{rest[len(src):]}"] = v
                break
        else:
            raise KeyError(f"no OpenCLIP mapping for key {k!r}")
    for (idx, kind), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise KeyError(f"layer {idx}: incomplete q/k/v {kind} ({sorted(parts)})")
        out[f"transformer.resblocks.{idx}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    return out


# ------------------------------------------------------------------------------------ top level


def _prefixed(prefix: str, sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {prefix + k: v for k, v in sd.items()}


def diffusers_to_ldm_state_dict(unet, vae, text_encoder, text_encoder_2=None) -> dict[str, Tensor]:
    """Build a full LDM single-file state dict.

    ``text_encoder_2 is None`` -> SD1.x layout (CLIP-L under ``cond_stage_model.transformer.``);
    otherwise SDXL layout (CLIP-L and OpenCLIP bigG under ``conditioner.embedders.{0,1}``).
    Each argument may be a module or a state dict. Tensors are shared with the inputs, not copied.
    """
    out: dict[str, Tensor] = {}
    out.update(_prefixed(UNET_PREFIX, unet_to_ldm(unet)))
    out.update(_prefixed(VAE_PREFIX, vae_to_ldm(vae)))
    if text_encoder_2 is None:
        out.update(_prefixed(SD1_CLIP_PREFIX, clip_to_ldm(text_encoder)))
    else:
        if text_encoder is not None:
            out.update(_prefixed(SDXL_CLIP_L_PREFIX, clip_to_ldm(text_encoder)))
        out.update(_prefixed(SDXL_CLIP_G_PREFIX, open_clip_to_ldm(text_encoder_2)))
    return out


def save_ldm_checkpoint(path, state_dict: Mapping[str, Tensor], dtype: torch.dtype | None = None) -> str:
    """Write ``state_dict`` as .safetensors; floating tensors are cast to ``dtype`` when given.

    Written to a temporary name first and renamed, so a reader never sees a partial file.
    """
    from safetensors.torch import save_file

    path = os.fspath(path)
    tensors = {}
    for k, v in state_dict.items():
        v = v.detach()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous().cpu()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        save_file(tensors, tmp, metadata={"format": "pt"})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def build_random_sd15_models(seed: int = 0):
    """(unet, vae, text_encoder) with the real SD1.5 architecture and random (default-initialised) weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from . import sd_configs as C

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(C.config(C.SD15_UNET_CONFIG))
    vae = AutoencoderKL.from_config(C.config(C.SD15_VAE_CONFIG))
    text_encoder = CLIPTextModel(CLIPTextConfig(**C.SD15_TEXT_ENCODER_CONFIG))
    return unet.eval(), vae.eval(), text_encoder.eval()


def build_random_sd15_checkpoint(path, seed: int = 0, dtype: torch.dtype | None = torch.float16) -> str:
    """Write an SD1.5-shaped LDM single-file checkpoint with random weights (about 2 GB in fp16)."""
    unet, vae, text_encoder = build_random_sd15_models(seed)
    sd = diffusers_to_ldm_state_dict(unet, vae, text_encoder)
    return save_ldm_checkpoint(path, sd, dtype=dtype)
