"""Model configs for building Stable-Diffusion-shaped models with random weights (no network).

``SD15_*`` / ``SDXL_*`` are the real architectures (the configs of the public SD1.5 and SDXL-base diffusers
folders), so ComfyUI detects a checkpoint built from them as SD1.5 / SDXL. ``TINY_*`` are small shapes of
the same families for fast unit tests. Pass the UNet/VAE dicts as ``Model.from_config(dict)`` (or
``Model(**dict)``) and the text-encoder dicts to ``CLIPTextConfig(**dict)``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

# --- the real architectures: the configs that ship with the pack (trainer/models/configs), read here so
# the tests build exactly what the loader converts single files against.
_CONFIGS = Path(__file__).resolve().parents[2] / "trainer" / "models" / "configs"


def _load(family: str, part: str) -> dict:
    name = "scheduler_config.json" if part == "scheduler" else "config.json"
    d = json.loads((_CONFIGS / family / part / name).read_text())
    d.pop("_class_name", None)
    return d


SD15_UNET_CONFIG = _load("sd15", "unet")
SD15_VAE_CONFIG = _load("sd15", "vae")
CLIP_L_TEXT_CONFIG = _load("sd15", "text_encoder")
SD15_TEXT_ENCODER_CONFIG = CLIP_L_TEXT_CONFIG
SD15_SCHEDULER_CONFIG = _load("sd15", "scheduler")
SDXL_UNET_CONFIG = _load("sdxl", "unet")
SDXL_VAE_CONFIG = _load("sdxl", "vae")
CLIP_G_TEXT_CONFIG = _load("sdxl", "text_encoder_2")
SDXL_SCHEDULER_CONFIG = _load("sdxl", "scheduler")

# --- tiny shapes for unit tests -----------------------------------------------------------------

TINY_SD15_UNET_CONFIG = {
    "block_out_channels": [32, 64, 64],
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 2,
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
    "in_channels": 4,
    "out_channels": 4,
    "sample_size": 16,
}

TINY_SDXL_UNET_CONFIG = {
    "block_out_channels": [32, 64],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 1,
    "transformer_layers_per_block": [1, 2],
    "cross_attention_dim": 64,  # = CLIP-L hidden + CLIP-G hidden of the tiny encoders below
    "attention_head_dim": [2, 4],
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 80,  # pooled CLIP-G projection (32) + 6 * 8 time ids
    "norm_num_groups": 8,
    "in_channels": 4,
    "out_channels": 4,
    "sample_size": 16,
}

TINY_VAE_CONFIG = {
    "block_out_channels": [32, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "in_channels": 3,
    "out_channels": 3,
    "sample_size": 32,
}

TINY_CLIP_L_TEXT_CONFIG = dict(
    CLIP_L_TEXT_CONFIG,
    hidden_size=32,
    intermediate_size=37,
    num_attention_heads=4,
    num_hidden_layers=3,
    projection_dim=32,
    vocab_size=1000,
)

TINY_CLIP_G_TEXT_CONFIG = dict(
    CLIP_G_TEXT_CONFIG,
    hidden_size=32,
    intermediate_size=64,
    num_attention_heads=4,
    num_hidden_layers=2,
    projection_dim=32,
    vocab_size=1000,
)


def config(d: dict) -> dict:
    """A deep copy, so callers may modify what they get."""
    return copy.deepcopy(d)
