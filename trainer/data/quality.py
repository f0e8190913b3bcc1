"""Per-image measurements for the dataset report: content hash, sharpness, perceptual hash.

Sharpness is the variance of a 4-neighbour Laplacian on the greyscale picture scaled so its longer
side is SHARPNESS_SIDE pixels (0..255 grey levels). Scaling first makes the number independent of the
file's pixel count and close to what the model sees at 512–768 px training resolution.

Near duplicates are found with a 64-bit difference hash (dHash: is each of 8x8 cells brighter than its
right neighbour, on a 9x8 greyscale thumbnail); two pictures whose hashes differ in at most
NEAR_DUPLICATE_BITS bits look alike to a person at thumbnail size (same shot re-encoded, resized,
slightly cropped or recoloured).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .images import load_rgb

log = logging.getLogger("lora_studio.data")

SHARPNESS_SIDE = 512
# Below this a picture is blurry at training scale. Calibrated on synthetic scenes (shapes, text-like
# strokes, noise textures): sharp ones score 300-5000+, the same ones after a 2 px Gaussian blur 20-60,
# after 4 px under 15; soft but intentional styles (watercolour) score 80-300.
BLUR_THRESHOLD = 40.0
# A picture far softer than the rest of its dataset is flagged too, with at least this many pictures
# to compare against: a single out-of-focus shot among sharp ones stands out even above the threshold.
BLUR_RELATIVE = 0.15
BLUR_RELATIVE_MIN_IMAGES = 5
# 64-bit dHash distance at or below which two pictures are near duplicates. Re-encodes and resizes of
# one picture differ by 0-4 bits; different photos of one subject by 12+; unrelated ones by ~32.
NEAR_DUPLICATE_BITS = 6


@dataclass
class ImageStats:
    size: tuple[int, int]  # (width, height) after EXIF rotation
    sha256: str  # of the file's bytes: exact duplicates
    dhash: int  # 64-bit difference hash: near duplicates
    sharpness: float  # variance of the Laplacian at SHARPNESS_SIDE


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def laplacian_variance(grey: np.ndarray) -> float:
    g = grey.astype(np.float32)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def sharpness(img: Image.Image, side: int = SHARPNESS_SIDE) -> float:
    grey = img.convert("L")
    scale = side / max(grey.size)
    size = (max(3, round(grey.width * scale)), max(3, round(grey.height * scale)))
    return laplacian_variance(np.asarray(grey.resize(size, Image.Resampling.BILINEAR)))


def dhash(img: Image.Image) -> int:
    small = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def inspect_image(path: Path) -> ImageStats:
    """Decode once and measure. Raises DatasetError (from load_rgb) for anything unreadable."""
    img = load_rgb(path)
    return ImageStats(size=img.size, sha256=file_sha256(path), dhash=dhash(img), sharpness=sharpness(img))


def blurry(stats: list[ImageStats]) -> list[tuple[int, str]]:
    """Indices of blurry pictures with the reason, by the absolute and the relative rule."""
    out = []
    median = float(np.median([s.sharpness for s in stats])) if stats else 0.0
    relative = len(stats) >= BLUR_RELATIVE_MIN_IMAGES
    for i, s in enumerate(stats):
        if s.sharpness < BLUR_THRESHOLD:
            out.append((i, f"sharpness {s.sharpness:.0f} is below {BLUR_THRESHOLD:.0f}"))
        elif relative and s.sharpness < BLUR_RELATIVE * median:
            out.append((i, f"sharpness {s.sharpness:.0f} is below {BLUR_RELATIVE:.0%} of the dataset's median "
                           f"({median:.0f})"))
    return out


def near_duplicates(hashes: list[int], max_bits: int = NEAR_DUPLICATE_BITS) -> list[tuple[int, int, int]]:
    """(i, j, distance) for every pair i < j within `max_bits`. O(n^2): 150 pictures are 11k XORs."""
    return [(i, j, hamming(hashes[i], hashes[j])) for i in range(len(hashes)) for j in range(i + 1, len(hashes))
            if hamming(hashes[i], hashes[j]) <= max_bits]
