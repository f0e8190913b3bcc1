"""Preview images during training (the guide's --validation_prompt) and the bias-check grid.

Previews sample with the UNet as it is being trained (LoRA active), fixed seeds, and a negative
prompt that always ends with the operator's safety terms (the guide's SAFETY_NEGATIVE_TERMS).
"""
from __future__ import annotations

import contextlib
import logging
import os

import torch
from PIL import Image

from .models import BaseModel
from .pipeline import build_pipeline, seeded, to_pictures

log = logging.getLogger("lora_studio.preview")


def safety_terms(cfg) -> list[str]:
    """The config's terms plus the server operator's (LORA_STUDIO_SAFETY_NEGATIVE_TERMS): a user can add, not remove."""
    terms = list(cfg.safety_negative_terms)
    for t in os.environ.get("LORA_STUDIO_SAFETY_NEGATIVE_TERMS", "").split(","):
        if t.strip() and t.strip() not in terms:
            terms.append(t.strip())
    return terms


def negative_prompt(cfg, extra: str = "") -> str:
    """The config's negative prompt, the dataset's negative list (the guide's "Prompt-Negativliste"), then
    the safety terms — always last, always present."""
    parts = [p.strip() for p in (cfg.negative_prompt, extra) if p and p.strip()]
    return ", ".join(parts + safety_terms(cfg))


@torch.no_grad()
def render(bm: BaseModel, unet, prompts: list[str], cfg, device: torch.device, autocast=None,
           extra_negative: str = "") -> list[Image.Image]:
    """One image per prompt at the training resolution. Models go back where they were afterwards."""
    parts = [unet, bm.vae, *bm.text_encoders]
    placement = [(m, next(m.parameters()).device, m.training) for m in parts]
    try:
        for m in parts[1:]:
            m.to(device)
        for m in parts:
            m.eval()
        pipe = build_pipeline(bm, unet)
        neg = negative_prompt(cfg, extra_negative)
        images = []
        for i, prompt in enumerate(prompts):
            gen = seeded(cfg.preview_seed + i)
            with autocast() if autocast else contextlib.nullcontext():
                latents = pipe(prompt, negative_prompt=neg, num_inference_steps=cfg.preview_sampling_steps,
                               guidance_scale=cfg.preview_guidance, height=cfg.resolution, width=cfg.resolution,
                               generator=gen, output_type="latent").images
            images += to_pictures(pipe, latents)  # outside autocast: SDXL's VAE gives black pictures in fp16
        return images
    finally:
        for m, dev, training in placement:
            m.to(dev)
            m.train(training)


def grid(images: list[Image.Image], cols: int = 4) -> Image.Image:
    cols = max(1, min(cols, len(images)))
    rows = (len(images) + cols - 1) // cols
    w, h = images[0].size
    g = Image.new("RGB", (cols * w, rows * h), "white")
    for i, im in enumerate(images):
        g.paste(im, ((i % cols) * w, (i // cols) * h))
    return g
