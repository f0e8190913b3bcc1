"""Turn images and prompts into what the UNet eats, once per run instead of once per step.

The guide's script VAE-encodes and text-encodes every step; here the VAE runs once per image
(in fp32: SDXL's VAE overflows in fp16 and the pass is cheap when done once), and the frozen
text encoders once per prompt. When the text encoders train, only the token ids are cached.

Encoding happens on first use (`ItemEncoder.ensure`, called by the training loop for each batch), not
all before step 1: the user waits for one batch's encoding, not the whole dataset's (issue #12, time to
first step). Each picture and each prompt is encoded on its own, so an item's tensors are a function of
that item alone — the same whichever batch first asks for it, in a fresh run, a resumed one or a
later one served from the latent cache.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import Dataset, to_training_tensor
from .data.images import load_for_training
from .models import BaseModel

log = logging.getLogger("lora_studio.encode")


@dataclass
class Item:
    """One cached training example. Shapes for an SD1.5 model at 512 px in comments. The tensors are None
    until `ItemEncoder.ensure` has encoded the item (`encoded`)."""

    latent: torch.Tensor | None  # [4, 64, 64], already multiplied by the VAE scaling factor
    input_ids: list[torch.Tensor]  # per tokenizer: [77]
    embeds: torch.Tensor | None  # [77, 768] (SDXL: [77, 2048]) when the text encoders are frozen
    pooled: torch.Tensor | None  # SDXL only: [1280]
    time_ids: torch.Tensor | None  # SDXL only: [6] = original h, w, crop top, left, target h, w
    size: tuple[int, int]  # (width, height) of the training crop: batches never mix sizes
    caption: str
    path: Path | None = None  # the picture, read when the item is first encoded
    flip: bool = False

    @property
    def encoded(self) -> bool:
        return self.latent is not None


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


def weights_sha256(module: torch.nn.Module) -> str:
    """sha256 of a module's weights as loaded (names, dtypes, shapes, bytes): the latent cache's VAE identity.
    A VAE's 0.3 GB hash in well under a second, where the whole checkpoint file (UNet and all) takes seconds
    (issue #12); and base models that share a VAE share their cached latents."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()


def square_sizes(n: int, resolution: int) -> list[tuple[int, int]]:
    return [(resolution, resolution)] * n


class ItemEncoder:
    """Encodes items on first use. `latent_cache` (optional) has key()/get(key)/put(key, tensor) by content.

    The VAE (fp32) and, with `cache_text`, the frozen text encoders move to `device` on the first encode and
    back to the CPU (`release`) once every item it made is encoded: from then on the device holds the UNet
    alone, as with encoding everything up front."""

    def __init__(self, bm: BaseModel, device: torch.device, cache_text: bool, center_crop: bool = True,
                 latent_cache=None):
        self.bm, self.device, self.cache_text, self.center_crop = bm, device, cache_text, center_crop
        self.latent_cache = latent_cache
        self.pending: set[int] = set()  # id() of the items made and not yet encoded
        self._text: dict[str, tuple] = {}  # caption -> (ids, embeds, pooled): repeated captions encode once
        self._ready = False

    def items(self, dataset: Dataset, sizes: list[tuple[int, int]], flip: bool = False) -> list[Item]:
        """One unencoded item per sample (no file is read here)."""
        out = [Item(latent=None, input_ids=[], embeds=None, pooled=None, time_ids=None, size=(w, h),
                    caption=s.caption, path=Path(s.path), flip=flip) for s, (w, h) in zip(dataset.samples, sizes)]
        self.pending.update(id(it) for it in out)
        return out

    def _setup(self) -> None:
        if self._ready:
            return
        getattr(self.latent_cache, "vae_id", None)  # its hash reads the VAE's weights as loaded: before they move
        # nn.Module.to, not diffusers' override: the override warns about "modules to keep in fp32" on every cast
        torch.nn.Module.to(self.bm.vae, device=self.device, dtype=torch.float32)
        if self.cache_text:
            for te in self.bm.text_encoders:
                te.to(self.device)
        self._ready = True

    @torch.no_grad()
    def ensure(self, items: list[Item]) -> list[Item]:
        """Encode those of `items` not encoded yet; returns them (each once, in order)."""
        todo, seen = [], set()
        for it in items:
            if not it.encoded and id(it) not in seen:
                seen.add(id(it))
                todo.append(it)
        if not todo:
            return []
        self._setup()
        for it in todo:
            self._encode(it)
            self.pending.discard(id(it))
        if not self.pending:
            self.release()
        return todo

    def _encode(self, it: Item) -> None:
        bm, (w, h), cache = self.bm, it.size, self.latent_cache
        (ow, oh), img = load_for_training(it.path, w, h)  # reduced where it is far larger than w x h
        key = cache.key(it.path, w, h, self.center_crop, it.flip) if cache is not None else None
        latent = cache.get(key) if key is not None else None
        t, (top, left) = to_training_tensor(img, w, h, self.center_crop, it.flip)
        if latent is None:
            vae = self.bm.vae
            # mode, not a sample: a cache must be deterministic; one picture per call: batch-independent values
            z = vae.encode(t.unsqueeze(0).to(self.device)).latent_dist.mode() * vae.config.scaling_factor
            latent = z[0].cpu()
            if key is not None:
                cache.put(key, latent)
        if it.caption not in self._text:
            ids = tokenize(bm, [it.caption])
            embeds, pooled = encode_tokens(bm, ids) if self.cache_text else (None, None)
            self._text[it.caption] = ([i[0] for i in ids], None if embeds is None else embeds[0].cpu(),
                                      None if pooled is None else pooled[0].cpu())
        it.input_ids, it.embeds, it.pooled = self._text[it.caption]
        # SDXL's 'original size': the file's, as shown
        it.time_ids = torch.tensor([oh, ow, top, left, h, w], dtype=torch.float32) if bm.family == "sdxl" else None
        it.latent = latent

    def release(self) -> None:
        """The VAE (not needed until previews) and cached-text encoders back to the CPU: device memory for the UNet."""
        if not self._ready:
            return
        self.bm.vae.to("cpu")
        if self.cache_text:
            for te in self.bm.text_encoders:
                te.to("cpu")
        self._text.clear()
        self._ready = False


def build_items(bm: BaseModel, dataset: Dataset, sizes: list[tuple[int, int]], device: torch.device,
                cache_text: bool, center_crop: bool = True, flip: bool = False, latent_cache=None) -> list[Item]:
    """Encode every sample now (the same values as on first use)."""
    enc = ItemEncoder(bm, device, cache_text, center_crop, latent_cache)
    items = enc.items(dataset, sizes, flip)
    enc.ensure(items)
    return items
