"""Model configs for building Stable-Diffusion-shaped models with random weights (no network).

``SD15_*`` / ``SDXL_*`` are the real architectures (the configs of the public SD1.5 and SDXL-base diffusers
folders), so ComfyUI detects a checkpoint built from them as SD1.5 / SDXL. ``TINY_*`` are small shapes of
the same families for fast unit tests. Pass the UNet/VAE dicts as ``Model.from_config(dict)`` (or
``Model(**dict)``) and the text-encoder dicts to ``CLIPTextConfig(**dict)``.
"""

from __future__ import annotations

import copy

# --- SD1.5 (runwayml/stable-diffusion-v1-5) -----------------------------------------------------

SD15_UNET_CONFIG = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

SD15_VAE_CONFIG = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

# CLIP ViT-L/14 text tower (SD1.x text_encoder; also SDXL's text_encoder).
CLIP_L_TEXT_CONFIG = {
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "vocab_size": 49408,
}
SD15_TEXT_ENCODER_CONFIG = CLIP_L_TEXT_CONFIG

SD15_SCHEDULER_CONFIG = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "steps_offset": 1,
}

# --- SDXL base 1.0 ------------------------------------------------------------------------------

SDXL_UNET_CONFIG = {
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
}

SDXL_VAE_CONFIG = dict(SD15_VAE_CONFIG, sample_size=1024, scaling_factor=0.13025, force_upcast=True)

# OpenCLIP ViT-bigG/14 text tower (SDXL text_encoder_2, CLIPTextModelWithProjection).
CLIP_G_TEXT_CONFIG = {
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_size": 1280,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 5120,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "pad_token_id": 1,
    "projection_dim": 1280,
    "vocab_size": 49408,
}

SDXL_SCHEDULER_CONFIG = dict(SD15_SCHEDULER_CONFIG, interpolation_type="linear", timestep_spacing="leading")

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
