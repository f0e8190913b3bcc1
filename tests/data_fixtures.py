"""Builders for dataset tests: distinct sharp pictures, the dataset layouts, crafted bad files, tree snapshots."""
from __future__ import annotations

import io
import json
import os
import random
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZES = [(320, 320), (384, 256), (256, 384)]  # square, landscape, portrait: all above 256 px buckets


def textured(seed: int, size: tuple[int, int] = (320, 320)) -> Image.Image:
    """A sharp picture (shapes + grain) whose perceptual hash differs from every other seed's."""
    r, rs = random.Random(seed), np.random.default_rng(seed)
    im = Image.new("RGB", size, tuple(r.randrange(256) for _ in range(3)))
    d = ImageDraw.Draw(im)
    w, h = size
    for _ in range(12):
        x0, y0 = r.randrange(w), r.randrange(h)
        box = (x0, y0, x0 + r.randrange(w // 4, w), y0 + r.randrange(h // 4, h))
        (d.ellipse if r.random() < 0.5 else d.rectangle)(box, fill=tuple(r.randrange(256) for _ in range(3)))
    a = np.asarray(im).astype(np.int16) + rs.integers(-12, 13, (h, w, 1))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def save(img: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def guide_dataset(root: Path, n: int = 20, key: str = "file", prompt_key: str = "prompt", start: int = 0) -> Path:
    """The guide's layout: images/ + metadata.jsonl; every prompt holds the placeholder."""
    lines = []
    for i in range(start, start + n):
        name = f"{i:04d}.png"
        save(textured(i, SIZES[i % 3]), root / "images" / name)
        lines.append(json.dumps({key: name, prompt_key: f"photo {i} of <my_token>, detailed"}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def caption_dataset(root: Path, n: int = 20, ext: str = ".txt", start: int = 0) -> Path:
    """Pictures with caption files beside them."""
    for i in range(start, start + n):
        save(textured(i, SIZES[i % 3]), root / f"{i:04d}.png")
        (root / f"{i:04d}{ext}").write_text(f"<my_token>, picture {i}, outdoors", encoding="utf-8")
    return root


def png_bytes(width: int, height: int, depth: int, color_type: int, raw_rows: bytes) -> bytes:
    """A PNG written by hand (16-bit RGB, lying headers): Pillow cannot write all of these itself."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw_rows))
            + chunk(b"IEND", b""))


def bomb_png(width: int = 40_000, height: int = 40_000) -> bytes:
    """A header claiming 1.6 gigapixels with almost no data: a decompression bomb as far as a decoder knows."""
    return png_bytes(width, height, 8, 0, b"\x00" * 64)


def truncated_png(seed: int = 99) -> bytes:
    buf = io.BytesIO()
    textured(seed).save(buf, "PNG")
    data = buf.getvalue()
    return data[: len(data) // 2]


def zip_bytes(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A ZIP in memory (an upload's body) with exactly these names."""
    buf = io.BytesIO()
    zip_of(entries, buf, compression=compression)
    return buf.getvalue()


def zip_of(entries: dict[str, bytes], path, symlinks: dict[str, str] | None = None,
           compression: int = zipfile.ZIP_DEFLATED):
    """A ZIP with exactly these names (no normalisation: '../x' stays '../x'), into a path or a file object."""
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def folder_entries(root: Path, prefix: str = "") -> dict[str, bytes]:
    """Every file under `root` as ZIP entries (optionally under one top folder)."""
    return {prefix + p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def snapshot(path: Path) -> dict[str, tuple]:
    """Every entry under `path`: files and links with size and mtime, folders by kind only (a folder's own
    mtime moves when a temp entry comes and goes). 'Nothing was written' means equal snapshots."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            kind = stat.S_IFMT(st.st_mode)
            out[p.relative_to(path).as_posix()] = (kind,) if kind == stat.S_IFDIR else (kind, st.st_size,
                                                                                         st.st_mtime_ns)
    return out


def zeros_zip(path: Path, names: list[str], size: int, compression: int = zipfile.ZIP_DEFLATED,
              extra: dict[str, bytes] | None = None) -> Path:
    """Many entries of `size` zero bytes each (the many-small-entries bomb), plus `extra` real entries.
    Deflated entries share one compressed body, written by hand: 300 MiB of zeros cost one compression."""
    if extra:
        zip_of(extra, path, compression=compression)
    zeros = b"\x00" * size
    if compression != zipfile.ZIP_DEFLATED:
        with zipfile.ZipFile(path, "a" if extra else "w", compression) as zf:
            for name in names:
                zf.writestr(zipfile.ZipInfo(name), zeros, compress_type=compression)
        return path
    packed = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = packed.compress(zeros) + packed.flush()
    crc = zlib.crc32(zeros) & 0xFFFFFFFF
    head, central, count = b"", b"", 0
    if extra:  # keep the real entries: their local data, then their central records
        with zipfile.ZipFile(path) as zf:
            start = zf.start_dir
            count = len(zf.infolist())
        data = path.read_bytes()
        head, central = data[:start], data[start:data.rfind(b"PK\x05\x06")]
    out = bytearray(head)
    for name in names:
        n = name.encode()
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(body), size, len(n), 0) + n + body
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(body), size, len(n),
                               0, 0, 0, 0, 0, offset) + n
    count += len(names)
    path.write_bytes(bytes(out) + central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central),
                                                         len(out), 0))
    return path


def overlapping_zip(path: Path, names: list[str], data: bytes, step: int = 0) -> Path:
    """One entry's data, listed under many names whose local headers start `step` bytes apart (0: all at
    the same offset): the "overlapping files" bomb, written by hand because no ZIP tool makes one."""
    packed = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = packed.compress(data) + packed.flush()
    crc = zlib.crc32(data) & 0xFFFFFFFF
    first = names[0].encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(body), len(data), len(first), 0)
    blob = local + first + body
    central = b""
    for i, name in enumerate(names):
        n = name.encode()
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(body), len(data),
                               len(n), 0, 0, 0, 0, 0, min(i * step, len(blob) - 1)) + n
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(names), len(names), len(central), len(blob), 0)
    path.write_bytes(blob + central + end)
    return path


def lie_about_sizes(path: Path, claimed: int) -> Path:
    """Patch every central-directory entry to claim `claimed` uncompressed bytes (a lying header)."""
    data = bytearray(path.read_bytes())
    i = data.find(b"PK\x01\x02")
    while i >= 0:
        data[i + 24:i + 28] = struct.pack("<I", claimed)
        i = data.find(b"PK\x01\x02", i + 4)
    path.write_bytes(bytes(data))
    return path


def huge_png(path: Path, width: int, height: int, color_type: int = 6, depth: int = 8) -> Path:
    """A real, complete PNG of zeros (a decoder must inflate every row) that costs neither the memory nor
    the time of the picture: one row is deflated once with a full flush, which makes its compressed bytes
    independent of what came before, so repeating them `height` times is a valid stream of every row."""
    bands = {0: 1, 2: 3, 4: 2, 6: 4}[color_type] * depth // 8
    row = b"\x00" * (1 + width * bands)  # filter byte 0, then zero samples
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = packer.compress(row) + packer.flush(zlib.Z_FULL_FLUSH)
    end = packer.flush(zlib.Z_FINISH)
    n = len(row) * height
    adler = ((n % 65521) << 16) | 1  # adler32 of n zero bytes: a stays 1, b adds a n times
    body = b"\x78\xda" + block * height + end + struct.pack(">I", adler)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def bmp_header_only(path: Path, width: int, height: int) -> Path:
    """A 24-bit BMP whose header declares width x height, followed by no pixels."""
    row = (width * 3 + 3) // 4 * 4
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, row * height, 2835, 2835, 0, 0)
    path.write_bytes(b"BM" + struct.pack("<IHHI", 14 + len(dib) + row * height, 0, 0, 14 + len(dib)) + dib)
    return path
