"""Turn images and prompts into what the UNet eats, once per run instead of once per step.

The guide's script VAE-encodes and text-encodes every step; here the VAE runs once per image
(in fp32: SDXL's VAE overflows in fp16 and the pass is cheap when done once), and the frozen
text encoders once per prompt. When the text encoders train, only the token ids are cached.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .data import Dataset, to_training_tensor
from .data.images import load_for_training
from .models import BaseModel

log = logging.getLogger("lora_studio.encode")


@dataclass
class Item:
    """One cached training example. Shapes for an SD1.5 model at 512 px in comments."""

    latent: torch.Tensor  # [4, 64, 64], already multiplied by the VAE scaling factor
    input_ids: list[torch.Tensor]  # per tokenizer: [77]
    embeds: torch.Tensor | None  # [77, 768] (SDXL: [77, 2048]) when the text encoders are frozen
    pooled: torch.Tensor | None  # SDXL only: [1280]
    time_ids: torch.Tensor | None  # SDXL only: [6] = original h, w, crop top, left, target h, w
    size: tuple[int, int]  # (width, height) of the training crop: batches never mix sizes
    caption: str


def tokenize(bm: BaseModel, prompts: list[str]) -> list[torch.Tensor]:
    return [tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                return_tensors="pt").input_ids for tok in bm.tokenizers]


def encode_tokens(bm: BaseModel, ids: list[torch.Tensor], encoders: list | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Text encoder outputs in the form the family's UNet was trained with.

    SD1/SD2: the last hidden state. SDXL: the penultimate hidden states of both encoders side by side,
    plus the second encoder's pooled projection.
    """
    encoders = encoders or bm.text_encoders  # the training loop passes its (possibly DDP-wrapped) copies
    device = next(bm.text_encoders[0].parameters()).device
    if bm.family != "sdxl":
        return encoders[0](ids[0].to(device))[0], None
    states, pooled = [], None
    for te, tid in zip(encoders, ids):
        out = te(tid.to(device), output_hidden_states=True)
        states.append(out.hidden_states[-2])
        if hasattr(out, "text_embeds"):
            pooled = out.text_embeds
    return torch.cat(states, dim=-1), pooled


def square_sizes(n: int, resolution: int) -> list[tuple[int, int]]:
    return [(resolution, resolution)] * n


@torch.no_grad()
def build_items(bm: BaseModel, dataset: Dataset, sizes: list[tuple[int, int]], device: torch.device,
                cache_text: bool, center_crop: bool = True, flip: bool = False, batch: int = 4,
                latent_cache=None) -> list[Item]:
    """Encode every sample once. `latent_cache` (optional) has get(key)/put(key, tensor) by content key."""
    # nn.Module.to, not diffusers' override: the override warns about "modules to keep in fp32" on every cast
    vae = torch.nn.Module.to(bm.vae, device=device, dtype=torch.float32)
    scale = bm.vae.config.scaling_factor
    items: list[Item] = []
    samples = dataset.samples
    for start in range(0, len(samples), batch):
        chunk = list(zip(samples[start:start + batch], sizes[start:start + batch]))
        pixels, meta, latents = [], [], [None] * len(chunk)
        for j, (s, (w, h)) in enumerate(chunk):
            (ow, oh), img = load_for_training(s.path, w, h)  # reduced where it is far larger than w x h
            key = latent_cache.key(s.path, w, h, center_crop, flip) if latent_cache else None
            if key is not None:
                latents[j] = latent_cache.get(key)
            t, (top, left) = to_training_tensor(img, w, h, center_crop, flip)
            meta.append((oh, ow, top, left, key))  # SDXL's 'original size': the file's, as shown
            if latents[j] is None:
                pixels.append((j, t))
        # group the misses by size: one VAE call per size
        for size in {tuple(t.shape[1:]) for _, t in pixels}:
            group = [(j, t) for j, t in pixels if tuple(t.shape[1:]) == size]
            x = torch.stack([t for _, t in group]).to(device)
            z = vae.encode(x).latent_dist.mode() * scale  # mode, not a sample: a cache must be deterministic
            for (j, _), zj in zip(group, z):
                latents[j] = zj.cpu()
                if latent_cache is not None and meta[j][4] is not None:
                    latent_cache.put(meta[j][4], latents[j])
        prompts = [s.caption for s, _ in chunk]
        ids = tokenize(bm, prompts)
        embeds, pooled = encode_tokens(bm, ids) if cache_text else (None, None)
        for j, (s, (w, h)) in enumerate(chunk):
            oh, ow, top, left, _ = meta[j]
            items.append(Item(
                latent=latents[j],
                input_ids=[i[j] for i in ids],
                embeds=embeds[j].cpu() if embeds is not None else None,
                pooled=pooled[j].cpu() if pooled is not None else None,
                time_ids=torch.tensor([oh, ow, top, left, h, w], dtype=torch.float32) if bm.family == "sdxl" else None,
                size=(w, h), caption=s.caption))
    return items
