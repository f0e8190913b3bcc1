"""Image loading that never trusts the file: size limits, EXIF orientation, any mode to RGB."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import DatasetError

log = logging.getLogger("lora_studio.data")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# A training image above this many pixels is a decompression bomb, not a photo (~ 16k x 16k).
MAX_PIXELS = 256_000_000


def load_rgb(path: Path) -> Image.Image:
    """Open an image as 8-bit RGB with EXIF orientation applied. Raises DatasetError naming the file."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # restored below: PIL's limit is process-global
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            return _to_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DatasetError(f"{path.name}: image is too large to be safe ({e}). Fix: downscale it below "
                           f"{MAX_PIXELS // 1_000_000} megapixels or remove it.") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"{path.name}: not a readable image ({e.__class__.__name__}: {e}). "
                           "Fix: re-export it as PNG or JPEG, or remove it.") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit greyscale: scale to 8 bit, don't clip
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA"):  # composite on white: transparent areas would otherwise turn black
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB")


def to_training_tensor(im: Image.Image, width: int, height: int, center_crop: bool = True,
                       flip: bool = False) -> tuple[torch.Tensor, tuple[int, int]]:
    """Resize to cover (width, height), crop, scale to [-1, 1]. Returns (tensor [3,H,W], crop top-left)."""
    scale = max(width / im.width, height / im.height)
    nw, nh = max(width, round(im.width * scale)), max(height, round(im.height * scale))
    im = im.resize((nw, nh), Image.Resampling.LANCZOS)
    if center_crop:
        left, top = (nw - width) // 2, (nh - height) // 2
    else:
        left, top = 0, 0
    im = im.crop((left, top, left + width, top + height))
    if flip:
        im = ImageOps.mirror(im)
    arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), (top, left)
