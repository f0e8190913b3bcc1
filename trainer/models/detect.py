"""Which model family a checkpoint is, read from its keys (never from its name or a hub)."""
from __future__ import annotations

from pathlib import Path

from ..errors import ModelLoadError

SUPPORTED = "SD 1.5 and other SD 1.x (sd15), SD 2.x (sd2), SDXL base (sdxl)"
FAMILY_LABEL = {"sd15": "SD 1.5", "sd2": "SD 2.x", "sdxl": "SDXL"}

# (family or None for unsupported, what it is, a key prefix that identifies it). First match wins.
_SIGNATURES: list[tuple[str | None, str, str]] = [
    (None, "a LoRA (not a base model)", "lora_unet_"),
    (None, "a LoRA (not a base model)", "lora_te_"),
    (None, "SD 3 / 3.5", "model.diffusion_model.joint_blocks."),
    (None, "SD 3 / 3.5", "joint_blocks."),
    (None, "Flux", "double_blocks."),
    (None, "Flux", "model.diffusion_model.double_blocks."),
    (None, "Stable Cascade", "clip_txt_mapper."),
    (None, "a video/AnimateDiff model", "down_blocks.0.motion_modules."),
    ("sdxl", "SDXL base", "conditioner.embedders.1.model."),
    (None, "the SDXL refiner", "conditioner.embedders.0.model."),
    ("sd2", "SD 2.x", "cond_stage_model.model."),
    ("sd15", "SD 1.x", "cond_stage_model.transformer."),
]


def detect_family(keys: list[str] | set[str], source: Path) -> str:
    """Family of an LDM-layout state dict, or a ModelLoadError naming what it is and what is supported."""
    keyset = set(keys)
    for family, what, prefix in _SIGNATURES:
        if any(k.startswith(prefix) for k in keyset):
            if family is None:
                raise ModelLoadError(f"'{source.name}' is {what}, which LoRA Studio cannot train. "
                                     f"Supported base models: {SUPPORTED}. Fix: pick an SD 1.5, SD 2.x or SDXL checkpoint.")
            return family
    if any(k.startswith("model.diffusion_model.") for k in keyset):
        raise ModelLoadError(f"'{source.name}' has a diffusion model but no text encoder LoRA Studio knows "
                             f"(it may be a UNet-only file). Supported: {SUPPORTED} full checkpoints. Fix: use the "
                             "full checkpoint (with CLIP and VAE) as it lies in models/checkpoints.")
    raise ModelLoadError(f"'{source.name}' is not a Stable Diffusion checkpoint LoRA Studio recognises. "
                         f"Supported: {SUPPORTED}, as single .safetensors/.ckpt files or diffusers folders.")


def family_of_diffusers_folder(folder: Path) -> str:
    import json

    if (folder / "text_encoder_2").is_dir() or (folder / "unet" / "config.json").is_file() and \
            json.loads((folder / "unet" / "config.json").read_text()).get("addition_embed_type") == "text_time":
        return "sdxl"
    te = folder / "text_encoder" / "config.json"
    if te.is_file() and json.loads(te.read_text()).get("hidden_act") == "gelu":
        return "sd2"  # OpenCLIP ViT-H uses gelu; OpenAI CLIP-L uses quick_gelu
    return "sd15"
