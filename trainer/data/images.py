"""Image loading that never trusts the file: size limits, EXIF orientation, any mode to 8-bit sRGB.

Modes handled: 1/L/P/PA/LA/RGBA/RGBa (alpha composited on white), I;16* and I (16-bit greyscale PNGs,
scaled, never clipped), RGB/RGBA with 16 bits per channel (Pillow keeps the high byte, which is the
correct 8-bit value), CMYK (Adobe-inverted JPEGs are undone by Pillow; an embedded ICC profile is used
when littlecms is available), YCbCr/LAB/HSV via Pillow's converters.
"""
from __future__ import annotations

import io
import logging
import re
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import DatasetError

log = logging.getLogger("lora_studio.data")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# Any picture above this many pixels is a decompression bomb, not a photo (16k x 16k). JPEGs up to it are
# fine: they decode reduced (1/2 to 1/8, `draft`) straight to the size that is needed.
MAX_PIXELS = 256_000_000
# PNG, BMP and WEBP have no reduced decoding in Pillow: the whole frame is decoded, at 4 bytes per pixel
# (Pillow keeps RGB as RGBX), WEBP twice (libwebp's buffer, then Pillow's). 50 megapixels are 200 MB: a
# 48 MP phone picture fits, the 16000x16000 PNG of a 995 KB bomb (1 GB decoded, 4 GB once converted) does not.
MAX_DECODE_PIXELS = {"PNG": 50_000_000, "BMP": 50_000_000, "WEBP": 25_000_000}
# Decode/reduce to at least this many times the size that is needed, then resample (Pillow's `thumbnail`
# default): box-reducing first is indistinguishable from resampling the full frame, and bounds the memory
# of every conversion by the training size instead of the file's.
REDUCE_GAP = 2.0
_STRIP_PIXELS = 1_000_000  # conversions of a large picture run strip by strip: at most this much at once
_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")  # Pillow opens phones' MPO files through its JPEG plugin
_EXIF_ORIENTATION = 0x0112
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}  # EXIF orientation -> the operation that shows it upright


def _mp(pixels: float) -> str:
    return f"{pixels / 1e6:.2f}".rstrip("0").rstrip(".")  # 256, 144, 50.01: just above a limit shows so


def too_large(name: str, pixels: int, size: tuple[int, int] | None = None, fmt: str | None = None) -> DatasetError:
    """The one message for a picture refused by its size: what it has and the limit, in megapixels both."""
    limit = MAX_DECODE_PIXELS.get(fmt or "", MAX_PIXELS)
    has = f"{size[0]}×{size[1]} px = {_mp(pixels)} megapixels" if size else f"{_mp(pixels)} megapixels"
    if limit < MAX_PIXELS:
        where = (f"the limit for a {fmt}, which is decoded at full size (a JPEG, read reduced, may have up to "
                 f"{_mp(MAX_PIXELS)})")
        fix = f"downscale it below {_mp(limit)} megapixels or save it as JPEG, or remove it"
    else:
        where = "the limit for any picture: a decompression bomb, not a photo"
        fix = f"downscale it below {_mp(limit)} megapixels or remove it"
    return DatasetError(f"{name}: image is too large to be safe: {has}, above the {_mp(limit)} megapixels that are "
                        f"{where}. Fix: {fix}.")


def _open(path: Path) -> Image.Image:
    """Open without decoding and refuse huge images by their header, before any pixel is decoded."""
    im = Image.open(path, formats=_FORMATS)
    w, h = im.size
    limit = MAX_DECODE_PIXELS.get(im.format, MAX_PIXELS)
    if w * h > min(limit, MAX_PIXELS):
        fmt = im.format
        im.close()
        raise too_large(path.name, w * h, (w, h), fmt)
    return im


_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def _explain(path: Path, e: Exception) -> DatasetError:
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        # Pillow's own check (above 2x its limit) fires before the size can be read; its message has the count
        m = _BOMB_PIXELS.search(str(e))
        return too_large(path.name, int(m.group(1)) if m else MAX_PIXELS + 1)
    if isinstance(e, PermissionError):
        return DatasetError(f"{path.name}: this process may not read the file. Fix: check its permissions.")
    if isinstance(e, FileNotFoundError):
        return DatasetError(f"{path.name}: file not found (moved or deleted?). Fix: check the dataset folder.")
    if isinstance(e, MemoryError):
        return DatasetError(f"{path.name}: there was not enough memory to decode it. Fix: downscale it, or free "
                            "memory on the server.")
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
        with warnings.catch_warnings():
            # between 1x and 2x its limit Pillow only warns, in words of its own: _open refuses those itself
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return fn()
    except DatasetError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, Image.DecompressionBombError,
            Image.DecompressionBombWarning, struct.error) as e:
        raise _explain(path, e) from None
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _decode(path: Path, need: tuple[int, int] | None, longer_side: int | None = None
            ) -> tuple[tuple[int, int], Image.Image]:
    """(size as shown, RGB picture as shown). With `need` (w, h as shown) or `longer_side`, the picture is
    decoded or box-reduced to no less than REDUCE_GAP times that before any conversion: the memory of a
    large picture's conversions is bounded by what training uses, not by the file."""
    with _open(path) as im:
        w, h = im.size
        orientation = _orientation(im)
        turned = orientation in (5, 6, 7, 8)
        if longer_side:  # the dataset check: JPEGs decoded as small as before (its thresholds were set so)
            scale, draft_gap = max(w, h) / longer_side, 1.0
        elif need:
            nw, nh = (need[1], need[0]) if turned else need  # the file stores the picture unrotated
            scale, draft_gap = min(w / nw, h / nh), REDUCE_GAP
        else:
            scale, draft_gap = 1.0, 1.0
        d = scale / draft_gap
        if im.format in ("JPEG", "MPO") and d >= 2:
            im.draft("RGB", (max(1, int(w / d)), max(1, int(h / d))))  # libjpeg scales by 1/2, 1/4 or 1/8
        im.load()
        k = max(1, int(scale * im.width / w / REDUCE_GAP))  # what the draft has not reduced yet
        # a large frame converts strip by strip even unreduced: RGBA compositing alone holds three copies
        rgb = _reduced_rgb(im, k) if k > 1 or im.width * im.height > _STRIP_PIXELS else _to_rgb(im)
    if orientation in _TRANSPOSE:
        rgb = rgb.transpose(_TRANSPOSE[orientation])
    return ((h, w) if turned else (w, h)), rgb


def _reduced_rgb(im: Image.Image, k: int) -> Image.Image:
    """_to_rgb(im).reduce(k) (k = 1: _to_rgb(im)), strip by strip: never a converted copy of the full frame in memory.
    Box blocks are aligned at 0, so strips of a height divisible by k give exactly the whole-image result."""
    rows = max(k, _STRIP_PIXELS // max(1, im.width) // k * k)
    out = Image.new("RGB", (-(-im.width // k), -(-im.height // k)))
    for top in range(0, im.height, rows):
        strip = im.crop((0, top, im.width, min(im.height, top + rows)))
        rgb = _to_rgb(strip)
        out.paste(rgb.reduce(k) if k > 1 else rgb, (0, top // k))
    return out


def load_rgb(path: Path) -> Image.Image:
    """Open an image as 8-bit RGB with EXIF orientation applied. Raises DatasetError naming the file."""
    path = Path(path)
    return _guarded(path, lambda: _decode(path, None)[1])


def load_rgb_reduced(path: Path, side: int) -> tuple[tuple[int, int], Image.Image]:
    """(size as shown, RGB picture with its longer side >= `side`, reduced where it is much larger).

    JPEGs decode at 1/2, 1/4 or 1/8 scale in a fraction of the time: the quality checks of a
    150-photo dataset then take seconds, not minutes. The size returned is the full one.
    """
    path = Path(path)
    return _guarded(path, lambda: _decode(path, None, longer_side=side))


def load_for_training(path: Path, width: int, height: int) -> tuple[tuple[int, int], Image.Image]:
    """(size as shown, RGB picture that covers width x height at least REDUCE_GAP times where it can)."""
    path = Path(path)
    return _guarded(path, lambda: _decode(path, (width, height)))


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
