"""Image loading that never trusts the file: size limits, EXIF orientation, any mode to 8-bit sRGB.

Modes handled: 1/L/P/PA/LA/RGBA/RGBa (alpha composited on white), I;16* and I (16-bit greyscale PNGs,
scaled, never clipped), RGB/RGBA with 16 bits per channel (Pillow keeps the high byte, which is the
correct 8-bit value), CMYK (Adobe-inverted JPEGs are undone by Pillow; an embedded ICC profile is used
when littlecms is available), YCbCr/LAB/HSV via Pillow's converters.
"""
from __future__ import annotations

import io
import logging
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import DatasetError

log = logging.getLogger("lora_studio.data")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# A training image above this many pixels is a decompression bomb, not a photo (~ 16k x 16k).
MAX_PIXELS = 256_000_000
_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")  # Pillow opens phones' MPO files through its JPEG plugin
_EXIF_ORIENTATION = 0x0112


def _open(path: Path) -> Image.Image:
    """Open without decoding and refuse huge images by their header (Pillow only warns below 2x its limit)."""
    im = Image.open(path, formats=_FORMATS)  # Pillow refuses > 2x its limit itself; between 1x and 2x only warns
    if im.width * im.height > MAX_PIXELS:
        w, h = im.size
        im.close()
        raise Image.DecompressionBombError(f"{w}x{h} = {w * h} pixels")
    return im


def _explain(path: Path, e: Exception) -> DatasetError:
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return DatasetError(f"{path.name}: image is too large to be safe ({e}). Fix: downscale it below "
                            f"{MAX_PIXELS // 1_000_000} megapixels or remove it.")
    if isinstance(e, PermissionError):
        return DatasetError(f"{path.name}: this process may not read the file. Fix: check its permissions.")
    if isinstance(e, FileNotFoundError):
        return DatasetError(f"{path.name}: file not found (moved or deleted?). Fix: check the dataset folder.")
    if isinstance(e, Image.UnidentifiedImageError) or _is_empty(path):
        return DatasetError(f"{path.name}: not an image (empty, or another file type with an image extension). "
                            "Fix: re-export it as PNG or JPEG, or remove it.")
    return DatasetError(f"{path.name}: not a readable image ({e.__class__.__name__}: {e}); it may be truncated. "
                        "Fix: re-export it as PNG or JPEG, or remove it.")


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # malformed EXIF: show the pixels as stored rather than lose the picture
        return 1


def _guarded(path: Path, fn):
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # restored below: PIL's limit is process-global
    try:
        return fn()
    except DatasetError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, Image.DecompressionBombError,
            Image.DecompressionBombWarning, struct.error) as e:
        raise _explain(path, e) from None
    finally:
        Image.MAX_IMAGE_PIXELS = old


def load_rgb(path: Path) -> Image.Image:
    """Open an image as 8-bit RGB with EXIF orientation applied. Raises DatasetError naming the file."""
    path = Path(path)

    def go() -> Image.Image:
        with _open(path) as im:
            im.load()
            if _orientation(im) != 1:
                im = ImageOps.exif_transpose(im)
            return _to_rgb(im)

    return _guarded(path, go)


def load_rgb_reduced(path: Path, side: int) -> tuple[tuple[int, int], Image.Image]:
    """(size as shown, RGB picture with its longer side >= `side` where the format can decode smaller).

    JPEGs decode at 1/2, 1/4 or 1/8 scale in a fraction of the time: the quality checks of a
    150-photo dataset then take seconds, not minutes. The size returned is the full one.
    """
    path = Path(path)

    def go():
        with _open(path) as im:
            w, h = im.size
            turned = _orientation(im) in (5, 6, 7, 8)
            if im.format in ("JPEG", "MPO") and max(w, h) > 2 * side:
                scale = side / max(w, h)
                im.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))
            im.load()
            if _orientation(im) != 1:
                im = ImageOps.exif_transpose(im)
            return ((h, w) if turned else (w, h)), _to_rgb(im)

    return _guarded(path, go)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) as shown, i.e. after EXIF rotation, read from the header only."""
    path = Path(path)

    def go() -> tuple[int, int]:
        with _open(path) as im:
            w, h = im.size
            return (h, w) if _orientation(im) in (5, 6, 7, 8) else (w, h)

    return _guarded(path, go)


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode.startswith("I;16") or im.mode == "I":
        # 16-bit greyscale (PNG): the full range is 0..65535 whatever the picture's brightness
        arr = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(arr / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64))
        im = Image.fromarray(np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0) + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "CMYK":
        return _cmyk_to_rgb(im)
    icc = im.info.get("icc_profile")
    if im.mode in ("P", "PA", "LA", "La", "RGBa") or "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode == "RGBA":  # composite on white: transparent areas would otherwise turn black
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    im = im.convert("RGB")
    return _to_srgb(im, icc) if icc else im


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    icc = im.info.get("icc_profile")
    converted = _to_srgb(im, icc) if icc else None
    return converted if converted is not None else im.convert("RGB")


def _to_srgb(im: Image.Image, icc: bytes) -> Image.Image | None:
    """Convert by the embedded colour profile (phone photos: Display P3; print files: CMYK profiles).

    For RGB input the image itself comes back when the profile cannot be used; for CMYK None does.
    """
    try:
        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        desc = (ImageCms.getProfileDescription(src) or "").lower()
        if im.mode == "RGB" and "srgb" in desc:
            return im
        return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except Exception as e:  # a broken profile must not cost the picture; Pillow's plain conversion is close
        log.debug("colour profile ignored (%s)", e)
        return None if im.mode == "CMYK" else im


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
