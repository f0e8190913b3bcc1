"""Tiny random SD-shaped models, built from the configs in `configs/tiny-*` — no download.

This is the clearly labelled *demo model* of the README (it learns, but its pictures are noise)
and the test suites' base model. Weights are seeded, so the same call builds the same folder.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from .load import CONFIG_ROOT
from .tokenizers import write_char_tokenizer

log = logging.getLogger("lora_studio.models")

TINY_FAMILIES = {"sd15": "tiny-sd15", "sd2": "tiny-sd2", "sdxl": "tiny-sdxl"}


def build_tiny_model(out_dir: str | Path, family: str = "sd15", seed: int = 0, config_root: Path | None = None) -> Path:
    """Write a diffusers folder with random weights for `family` (sd15 / sd2 / sdxl). Returns the folder."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    src = config_root or CONFIG_ROOT / TINY_FAMILIES[family]
    out = Path(out_dir)
    if (out / "model_index.json").is_file():
        return out
    tmp = out.with_name(out.name + ".partial")
    cfg = lambda sub: json.loads((src / sub / "config.json").read_text())  # noqa: E731
    torch.manual_seed(seed)
    UNet2DConditionModel.from_config(cfg("unet")).save_pretrained(tmp / "unet")
    AutoencoderKL.from_config(cfg("vae")).save_pretrained(tmp / "vae")
    CLIPTextModel(CLIPTextConfig(**cfg("text_encoder"))).save_pretrained(tmp / "text_encoder")
    write_char_tokenizer(tmp / "tokenizer")
    if (src / "text_encoder_2").is_dir():
        CLIPTextModelWithProjection(CLIPTextConfig(**cfg("text_encoder_2"))).save_pretrained(tmp / "text_encoder_2")
        write_char_tokenizer(tmp / "tokenizer_2")
    DDPMScheduler.from_config(json.loads((src / "scheduler" / "scheduler_config.json").read_text())) \
        .save_pretrained(tmp / "scheduler")
    index = {"_class_name": "StableDiffusionXLPipeline" if family == "sdxl" else "StableDiffusionPipeline",
             "lora_studio_note": "TINY RANDOM DEMO MODEL - not a real Stable Diffusion; its images are noise"}
    (tmp / "model_index.json").write_text(json.dumps(index, indent=1))
    tmp.rename(out)  # whole folder or nothing: a crash mid-build leaves only the .partial folder
    log.info("built tiny %s demo model in %s", family, out)
    return out
