"""The one diffusers pipeline that renders with the loaded base model: previews and class pictures.

Assembled from the models already in memory (nothing downloaded, nothing loaded twice), with its own
copy of the sampler so training's noise scheduler stays as it is. Both uses get the same choices, on
purpose: no safety checker (the pack's safety lives in the negative prompt, preview.safety_terms), no
invisible watermark (SDXL's adds a dependency and marks the pictures the trainer learns from), no
progress bars (the trainer reports its own progress), weights in the dtype they were loaded in, and the
denoising under the caller's autocast while the VAE decodes outside it, in its own dtype (`to_pictures`:
SDXL's VAE overflows in fp16 and gives black pictures).
"""
from __future__ import annotations

from typing import Any

import torch

from .models import BaseModel

# Good pictures in 20–30 steps; the training DDPM schedule would need ~1000. Part of the class-image cache key.
SAMPLER = "DPMSolverMultistepScheduler"


def build_pipeline(bm: BaseModel, unet: Any = None) -> Any:
    """A StableDiffusion(XL)Pipeline over `bm`'s parts; `unet` replaces bm.unet (the one being trained)."""
    import diffusers
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    sampler = getattr(diffusers, SAMPLER).from_config(bm.scheduler.config)
    parts = dict(vae=bm.vae, text_encoder=bm.text_encoders[0], tokenizer=bm.tokenizers[0],
                 unet=bm.unet if unet is None else unet, scheduler=sampler)
    if bm.family == "sdxl":
        pipe = StableDiffusionXLPipeline(**parts, text_encoder_2=bm.text_encoders[1], tokenizer_2=bm.tokenizers[1],
                                         add_watermarker=False)
    else:
        pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def seeded(seed: int) -> torch.Generator:
    """A CPU generator: the same seed gives the same picture on any device."""
    return torch.Generator("cpu").manual_seed(int(seed))


@torch.no_grad()
def to_pictures(pipe: Any, latents: torch.Tensor) -> list:
    """PIL pictures from `pipe(..., output_type="latent")`'s latents, decoded by the pipeline's VAE in its dtype."""
    vae = pipe.vae
    latents = latents.to(vae.device, vae.dtype)
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is not None and std is not None:
        shape = (1, len(mean), 1, 1)
        latents = latents * torch.tensor(std, device=latents.device, dtype=latents.dtype).view(shape) \
            / vae.config.scaling_factor + torch.tensor(mean, device=latents.device, dtype=latents.dtype).view(shape)
    else:
        latents = latents / vae.config.scaling_factor
    pixels = vae.decode(latents).sample  # [n, 3, H, W] in [-1, 1]
    return pipe.image_processor.postprocess(pixels.float(), output_type="pil")
