"""Per-image measurements for the dataset report: content hash, sharpness, perceptual hash.

Sharpness is the variance of a 4-neighbour Laplacian on the greyscale picture scaled to an area of
SHARPNESS_SIDE² pixels (0..255 grey levels). Scaling first makes the number independent of the file's
pixel count, fair between portrait, square and panorama, and close to what the model sees at 512 px.

Near duplicates are found with a 64-bit difference hash (dHash: is each of 8x8 cells brighter than its
right neighbour, on a 9x8 greyscale thumbnail); two pictures whose hashes differ in at most
NEAR_DUPLICATE_BITS bits look alike to a person at thumbnail size (same shot re-encoded, resized,
slightly cropped or recoloured).
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .images import load_rgb_reduced

log = logging.getLogger("lora_studio.data")

SHARPNESS_SIDE = 512
# Below this a picture is blurry at training scale. Measured on synthetic 640x480 / 768x512 scenes
# (hard-edged shapes; shapes with lens softness and sensor noise): sharp ones score 73-210; after a
# Gaussian blur of 1 px 11-24, of 1.5 px 4-8, of 2 px 2-5, of 4 px 1-2; a featureless picture 0.
# 15 sits between "slightly soft" (1 px) and "clearly out of focus" (1.5 px and more). Real photographs,
# with texture everywhere, score higher than these sparse scenes, so the rule errs on the quiet side.
# Painterly styles can score low on purpose: it is a warning, never a block.
BLUR_THRESHOLD = 15.0
# A picture far softer than the rest of its dataset is flagged too, with at least this many pictures
# to compare against: a single out-of-focus shot among sharp ones stands out even above the threshold.
BLUR_RELATIVE = 0.15
BLUR_RELATIVE_MIN_IMAGES = 5
# 64-bit dHash distance at or below which two pictures are near duplicates. Measured: a JPEG re-encode
# (quality 60) 1 bit, a resize or +30 brightness 0, a 5 % crop 7; distinct pictures of one subject with
# similar layout (the demo fox set) 19 or more, unrelated pictures ~32 (min 18 over 780 pairs). 8 catches
# re-encodes, resizes and small crops with a wide margin to different pictures. A mirrored copy is
# compared too (random_flip would train on it anyway).
NEAR_DUPLICATE_BITS = 8


@dataclass
class ImageStats:
    size: tuple[int, int]  # (width, height) after EXIF rotation
    sha256: str  # of the file's bytes: exact duplicates
    dhash: int  # 64-bit difference hash: near duplicates
    dhash_mirrored: int  # of the left-right mirrored picture
    sharpness: float  # variance of the Laplacian at an area of SHARPNESS_SIDE²


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, remembered by (path, size, mtime): the report, the dataset hash and the
    latent cache all ask for it, and each picture should be read for it once per run, not three times."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key in _SHA_CACHE:
        return _SHA_CACHE[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if len(_SHA_CACHE) > 100_000:  # a long-lived ComfyUI process: keep the memo bounded
        _SHA_CACHE.clear()
    _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def laplacian_variance(grey: np.ndarray) -> float:
    g = grey.astype(np.float32)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def sharpness(img: Image.Image, side: int = SHARPNESS_SIDE) -> float:
    """Laplacian variance with the picture scaled to an area of side² (up or down, aspect kept): every
    picture is judged at the same pixel count, close to how the model sees it in its bucket."""
    grey = img.convert("L")
    scale = side / (grey.width * grey.height) ** 0.5
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
    size, img = load_rgb_reduced(path, SHARPNESS_SIDE)
    return ImageStats(size=size, sha256=file_sha256(path), dhash=dhash(img),
                      dhash_mirrored=dhash(ImageOps.mirror(img)), sharpness=sharpness(img))


def blurry(stats: list[ImageStats], skip: set[int] = frozenset()) -> list[tuple[int, str]]:
    """Indices of blurry pictures with the reason, by the absolute and the relative rule. `skip`: pictures
    already reported as too small (upscaling is what blurs them; one warning is enough)."""
    out = []
    median = float(np.median([s.sharpness for s in stats])) if stats else 0.0
    relative = len(stats) >= BLUR_RELATIVE_MIN_IMAGES
    for i, s in enumerate(stats):
        if i in skip:
            continue
        if s.sharpness < BLUR_THRESHOLD:
            out.append((i, f"sharpness {s.sharpness:.0f} is below {BLUR_THRESHOLD:.0f}"))
        elif relative and s.sharpness < BLUR_RELATIVE * median:
            out.append((i, f"sharpness {s.sharpness:.0f} is below {BLUR_RELATIVE:.0%} of the dataset's median "
                           f"({median:.0f})"))
    return out


def near_duplicates(stats: list[ImageStats], max_bits: int = NEAR_DUPLICATE_BITS) -> list[tuple[int, int, int]]:
    """(i, j, distance) for every pair i < j within `max_bits`, a mirrored copy included.
    O(n^2): 150 pictures are 11k XORs."""
    out = []
    for i in range(len(stats)):
        for j in range(i + 1, len(stats)):
            d = min(hamming(stats[i].dhash, stats[j].dhash), hamming(stats[i].dhash, stats[j].dhash_mirrored))
            if d <= max_bits:
                out.append((i, j, d))
    return out
