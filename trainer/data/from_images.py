"""Pictures made in a graph (or anywhere in memory) → a dataset folder in the guide's layout.

The folder is `<parent>/<name>-<content hash>/` with `images/0001.png …` and `metadata.jsonl`, the same
layout a folder dataset has, so the pictures go through the same `check_dataset` (report, quality and
safety checks) and the same latent cache. The name carries a hash of the pixels and captions: queuing
the same pictures again reuses the folder (and so the cached latents); different pictures never
overwrite an earlier set. The folder appears whole or not at all (written beside, then renamed).
"""
from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_folder
from ..errors import DatasetError

MAX_GRAPH_IMAGES = 1000  # far above what a LoRA needs; stops a mis-wired video or list from filling the disk


def split_captions(text: str) -> list[str]:
    """One caption per line; blank lines are ignored."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def captions_for(n_images: int, captions: Sequence[str]) -> list[str]:
    """One caption for all pictures, or one per picture in order; anything else is an error naming the fix."""
    captions = [c.strip() for c in captions]
    if len(captions) == 1:
        return captions * n_images
    if len(captions) == n_images:
        return captions
    raise DatasetError(f"{n_images} pictures but {len(captions)} captions. Fix: write one caption per line, one "
                       "line per picture in the batch's order, or a single line that describes all of them.")


def _as_uint8(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise DatasetError(f"a picture has shape {a.shape}; expected height × width × 3 (RGB). Fix: connect an "
                           "IMAGE output (Load Image, VAE Decode) to the images input.")
    if a.dtype != np.uint8:  # ComfyUI's IMAGE: float in 0..1
        a = (np.clip(np.nan_to_num(a.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(a[..., :3])


def content_hash(pictures: Sequence[np.ndarray], captions: Sequence[str]) -> str:
    h = hashlib.sha256()
    for a, c in zip(pictures, captions):
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
        h.update(c.encode("utf-8") + b"\0")
    return h.hexdigest()


def write_image_dataset(images: Sequence[np.ndarray], captions: Sequence[str], parent: Path, name: str) -> Path:
    """Write pictures (H×W×3, uint8 or float 0..1) with their captions as a dataset folder; returns the folder."""
    if len(images) == 0:
        raise DatasetError("No pictures arrived at the images input. Fix: connect an IMAGE output with at least "
                           "one picture.")
    if len(images) > MAX_GRAPH_IMAGES:
        raise DatasetError(f"{len(images)} pictures arrived; at most {MAX_GRAPH_IMAGES} are taken from a graph. "
                           "Fix: connect a smaller batch (20–150 pictures suit a LoRA).")
    pictures = [_as_uint8(a) for a in images]
    texts = captions_for(len(pictures), captions)
    parent = Path(parent)
    target = parent / f"{name}-{content_hash(pictures, texts)[:12]}"
    if (target / "metadata.jsonl").is_file():
        return target  # the same pictures and captions: reuse the folder, and with it the latent cache
    try:
        with atomic_folder(target, overwrite=False) as tmp:  # fails if another run got there first
            _write_folder(tmp, pictures, texts)
    except OSError:
        if (target / "metadata.jsonl").is_file():
            return target
        raise
    return target


def _write_folder(folder: Path, pictures: Sequence[np.ndarray], captions: Sequence[str]) -> None:
    (folder / "images").mkdir()
    lines = []
    for i, (a, caption) in enumerate(zip(pictures, captions), start=1):
        file = f"{i:04d}.png"
        buf = io.BytesIO()
        Image.fromarray(a, "RGB").save(buf, format="PNG")
        (folder / "images" / file).write_bytes(buf.getvalue())
        lines.append(json.dumps({"file": file, "prompt": caption}, ensure_ascii=False))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
