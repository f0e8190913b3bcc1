"""A latent cache keyed by content, so a rerun skips the VAE for every picture it has seen.

The key covers everything the latent depends on: the image's bytes (not its name or date: a renamed
file still hits, an edited one misses), the training size, the crop mode, the flip, and the VAE
(`vae_id`: a sha256 of the VAE's weights; the training job uses `encode.weights_sha256(vae)`, so every base
model that shares a VAE shares its latents). Entries are safetensors files written atomically (trainer/atomic.py:
hidden partial + os.replace), so a crash or a parallel run never leaves a half-written latent that a later run trusts.
A corrupt or unreadable entry counts as a miss and is replaced.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from pathlib import Path
from typing import Callable

import torch

from ..atomic import write_atomic
from .quality import file_sha256

log = logging.getLogger("lora_studio.data.cache")

# part of every key: a change in encoding invalidates old entries (v2: large pictures are box-reduced first;
# v3: one picture per VAE call, so a latent no longer depends on which pictures shared its batch)
CACHE_FORMAT = "lora-studio-latent-v3"
_KEY = re.compile(r"^[0-9a-f]{64}$")


class LatentCache:
    """Content-keyed latent store under `root`. `hits` / `misses` count `get` calls since creation."""

    def __init__(self, root: Path | str, vae_id: str | Callable[[], str]):
        """`vae_id` may be a callable, asked once at the first key (the job hashes the VAE in the background)."""
        if not vae_id:
            raise ValueError("LatentCache needs a vae_id (a sha256 of the VAE's weights) so latents of one VAE "
                             "are never served for another")
        self.root = Path(root).expanduser()
        self._vae_id = vae_id
        self.hits = 0
        self.misses = 0
        self.write_errors = 0

    @property
    def vae_id(self) -> str:
        if callable(self._vae_id):
            got = str(self._vae_id() or "")
            if not got:
                raise ValueError("LatentCache's vae_id callable gave no id")
            self._vae_id = got
        return str(self._vae_id)

    def key(self, image_path: Path | str, w: int, h: int, center_crop: bool, flip: bool) -> str:
        parts = [CACHE_FORMAT, file_sha256(Path(image_path)), f"{int(w)}x{int(h)}",
                 f"crop={'center' if center_crop else 'topleft'}", f"flip={bool(flip)}", f"vae={self.vae_id}"]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):  # keys come from key(); anything else must not become a path
            raise ValueError(f"not a latent cache key: {key!r}")
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> torch.Tensor | None:
        path = self._path(key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            from safetensors.torch import load_file

            tensor = load_file(str(path))["latent"]
        except Exception as e:  # truncated by a full disk, written by something else: re-encode
            log.warning("latent cache entry %s unreadable (%s); encoding again", path.name, e)
            with contextlib.suppress(OSError):
                path.unlink()
            self.misses += 1
            return None
        self.hits += 1
        return tensor

    def put(self, key: str, tensor: torch.Tensor) -> None:
        """Store atomically. A failed write (disk full, read-only) costs speed next time, not this run."""
        from safetensors.torch import save_file

        path = self._path(key)
        latent = {"latent": tensor.detach().to("cpu").contiguous()}
        try:
            # no fsync: an entry a crash leaves short fails to load, counts as a miss and is encoded again
            write_atomic(path, lambda p: save_file(latent, str(p), metadata={"format": CACHE_FORMAT,
                                                                              "vae_id": self.vae_id}),
                         overwrite=True, fsync=False)
        except Exception as e:  # OSError mostly; safetensors raises its own types too
            self.write_errors += 1
            log.warning("latent cache: could not write %s (%s); training goes on without caching it", path, e)

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "write_errors": self.write_errors}

    def __repr__(self) -> str:
        return f"LatentCache({str(self.root)!r}, hits={self.hits}, misses={self.misses})"
