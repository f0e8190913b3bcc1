"""Import an uploaded ZIP (the guide's "Datensatz importieren") into a new dataset folder.

Everything is checked before the first byte is written: the archive opens, it holds at most
`max_entries` entries and `max_total_bytes` uncompressed, no entry is compressed more than
`max_ratio` : 1 (a ZIP bomb's signature), every name is a plain relative path (no '..', no absolute or
drive paths, no symlink entries, no encrypted entries), no two names collide when case is ignored,
and at least one picture is inside. Then the entries are streamed into a temporary folder beside the
target, counting real bytes (a lying header cannot exceed the limits), and the folder is renamed into
place in one step. An existing folder is never written into; on any failure nothing is left behind.

Only dataset files are extracted (pictures, caption files, metadata.jsonl, negative prompts); the rest
is skipped and logged. A single top-level folder (a zipped dataset folder) is unwrapped.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import DatasetError
from .captions import CAPTION_EXTENSIONS, NEGATIVE_PROMPT_FILES
from .discover import REPEAT_FOLDER
from .images import IMAGE_EXTENSIONS
from .safety import relative_name, safe_folder_name

log = logging.getLogger("lora_studio.data.zip")

MAX_ZIP_ENTRIES = 10_000  # 150 pictures with captions are 300; this leaves room for big collections
MAX_ZIP_TOTAL_BYTES = 8 << 30  # 8 GiB uncompressed: 150 camera RAW-sized PNGs fit, a disk-filling bomb does not
MAX_ZIP_ENTRY_BYTES = 1 << 30  # 1 GiB per file: far above any photo (and above load_rgb's pixel limit)
MAX_ZIP_RATIO = 200  # deflate reaches ~1000:1 only on repetitive data; pictures compress ~1:1, text ~5:1
RATIO_MIN_BYTES = 1 << 20  # small files may compress extremely (an all-white PNG's rows): judge large ones only
_JUNK = {"__macosx", ".ds_store", "thumbs.db", "desktop.ini"}
_DATA_NAMES = {"metadata.jsonl", *NEGATIVE_PROMPT_FILES}
_SUPPORTED_COMPRESSION = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


@dataclass(frozen=True)
class ZipLimits:
    max_entries: int = MAX_ZIP_ENTRIES
    max_total_bytes: int = MAX_ZIP_TOTAL_BYTES
    max_entry_bytes: int = MAX_ZIP_ENTRY_BYTES
    max_ratio: float = MAX_ZIP_RATIO


def _limits() -> ZipLimits:
    # read at call time so an operator (or a test) can change the module constants
    return ZipLimits(MAX_ZIP_ENTRIES, MAX_ZIP_TOTAL_BYTES, MAX_ZIP_ENTRY_BYTES, MAX_ZIP_RATIO)


def _is_junk(parts: tuple[str, ...]) -> bool:
    return any(p.lower() in _JUNK or p.startswith(".") for p in parts)


def _wanted(path: PurePosixPath) -> bool:
    suffix = path.suffix.lower()
    return suffix in IMAGE_EXTENSIONS or suffix in CAPTION_EXTENSIONS or path.name.lower() in _DATA_NAMES


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def plan_zip(zf: zipfile.ZipFile, label: str, limits: ZipLimits) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Validate every entry; return the (entry, relative target) pairs to extract. Raises DatasetError."""
    infos = zf.infolist()
    fix_zip = "Fix: make a new ZIP of the dataset folder with your system's 'compress' command."
    if len(infos) > limits.max_entries:
        raise DatasetError(f"{label} holds {len(infos)} entries, more than the limit of {limits.max_entries}. "
                           "Fix: upload only the dataset (pictures, captions, metadata.jsonl).")
    total = 0
    planned: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
    for info in infos:
        try:
            rel = relative_name(info.filename)
        except DatasetError as e:
            raise DatasetError(f"{label}: entry {e} Nothing was extracted.") from None
        if _is_symlink(info):
            raise DatasetError(f"{label}: entry '{info.filename}' is a symbolic link; links could point anywhere on "
                               f"the server. Nothing was extracted. Fix: zip the files themselves, not links to them.")
        if info.is_dir() or _is_junk(rel.parts):
            continue
        if info.flag_bits & 0x1:
            raise DatasetError(f"{label}: entry '{info.filename}' is encrypted. Nothing was extracted. "
                               "Fix: make the ZIP without a password.")
        if info.compress_type not in _SUPPORTED_COMPRESSION:
            raise DatasetError(f"{label}: entry '{info.filename}' uses an unsupported compression method "
                               f"({info.compress_type}). Nothing was extracted. {fix_zip}")
        if info.file_size > limits.max_entry_bytes:
            raise DatasetError(f"{label}: entry '{info.filename}' unpacks to {info.file_size >> 20} MiB, more than the "
                               f"limit of {limits.max_entry_bytes >> 20} MiB per file. Nothing was extracted. "
                               "Fix: downscale or remove that file.")
        if info.file_size >= RATIO_MIN_BYTES and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            ratio = info.file_size / max(info.compress_size, 1)
            raise DatasetError(f"{label}: entry '{info.filename}' is compressed {ratio:.0f}:1, more than the limit "
                               f"of {limits.max_ratio:.0f}:1 — the mark of a ZIP bomb, not of pictures. Nothing was "
                               f"extracted. {fix_zip}")
        total += info.file_size
        if total > limits.max_total_bytes:
            raise DatasetError(f"{label} unpacks to more than {limits.max_total_bytes >> 20} MiB, the limit for a "
                               "dataset. Nothing was extracted. Fix: downscale the pictures or split the dataset.")
        if not _wanted(rel):
            log.info("%s: skipping '%s' (not a picture, caption or metadata file)", label, info.filename)
            continue
        planned.append((info, rel))
    planned = _unwrap(planned)
    _check_collisions(planned, label)
    if not any(rel.suffix.lower() in IMAGE_EXTENSIONS for _, rel in planned):
        raise DatasetError(f"{label} holds no pictures ({', '.join(IMAGE_EXTENSIONS)}). Nothing was extracted. "
                           "Fix: zip the folder with images/ and metadata.jsonl (or images with .txt captions).")
    return planned


def _check_collisions(planned: list[tuple[zipfile.ZipInfo, PurePosixPath]], label: str) -> None:
    """Two entries that would be one file on Windows/macOS (case), or a file that is also a folder."""
    files: dict[str, str] = {}
    for info, rel in planned:
        key = rel.as_posix().lower()
        if key in files:
            raise DatasetError(f"{label}: entries '{files[key]}' and '{info.filename}' differ only in upper/lower case "
                               "and would be one file on Windows and macOS. Nothing was extracted. Fix: rename one of "
                               "them and zip again.")
        files[key] = info.filename
    for info, rel in planned:
        for k in range(1, len(rel.parts)):
            folder = PurePosixPath(*rel.parts[:k]).as_posix().lower()
            if folder in files:
                raise DatasetError(f"{label}: '{files[folder]}' is a file and also the folder of '{info.filename}'. "
                                   "Nothing was extracted. Fix: rename one of them and zip again.")


def _unwrap(planned: list[tuple[zipfile.ZipInfo, PurePosixPath]]) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """'my_concept/images/0001.png' -> 'images/0001.png' when everything sits in one top folder, unless
    that folder is part of the layout: 'images/' itself, or a kohya repeat folder such as '10_fox/'."""
    tops = {rel.parts[0] for _, rel in planned}
    top = next(iter(tops)) if len(tops) == 1 else ""
    if top and top.lower() != "images" and not REPEAT_FOLDER.match(top) \
            and all(len(rel.parts) > 1 for _, rel in planned):
        return [(info, PurePosixPath(*rel.parts[1:])) for info, rel in planned]
    return planned


def import_zip(zip_path: str | Path, dest_parent: str | Path, *, name: str | None = None,
               limits: ZipLimits | None = None) -> Path:
    """Extract a dataset ZIP into a NEW folder `dest_parent/<name>` (default: the ZIP's name) and return it.

    Raises DatasetError (nothing written) for a missing or broken ZIP, any unsafe or oversized entry,
    or an existing target folder.
    """
    limits = limits or _limits()
    zip_path = Path(zip_path).expanduser()
    label = f"ZIP '{zip_path.name}'"
    if not zip_path.is_file():
        raise DatasetError(f"{label} not found at '{zip_path}'. Fix: upload it to ComfyUI's input folder first.")
    folder = safe_folder_name(name if name is not None else zip_path.stem)
    dest_parent = Path(dest_parent).expanduser()
    target = dest_parent / folder
    if target.exists() or target.is_symlink():
        raise DatasetError(f"A folder '{folder}' already exists in '{dest_parent}'; an import never writes into an "
                           "existing folder. Fix: choose another name, or delete or rename the old folder.")
    try:
        with zipfile.ZipFile(zip_path) as zf:
            planned = plan_zip(zf, label, limits)
            dest_parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.importing-", dir=dest_parent))
            try:
                _extract(zf, planned, tmp, label, limits)
                if target.exists() or target.is_symlink():  # appeared while we extracted
                    raise DatasetError(f"A folder '{folder}' appeared in '{dest_parent}' during the import. "
                                       "Fix: import again under another name.")
                os.rename(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise DatasetError(f"{label} is not a readable ZIP file ({e}). Nothing was extracted. Fix: upload it again "
                           "or make a new ZIP of the dataset folder.") from None
    except OSError as e:
        raise DatasetError(f"{label} could not be imported into '{dest_parent}' ({e.strerror or e}). Nothing was "
                           "left behind. Fix: check free disk space and the folder's permissions.") from None
    log.info("imported %s: %d files into %s", label, len(planned), target)
    return target


def _extract(zf: zipfile.ZipFile, planned, tmp: Path, label: str, limits: ZipLimits) -> None:
    written = 0
    for info, rel in planned:
        out = tmp.joinpath(*rel.parts)
        if tmp.resolve() not in out.parent.resolve().parents and out.parent.resolve() != tmp.resolve():
            raise DatasetError(f"{label}: entry '{info.filename}' would land outside the import folder. "
                               "Nothing was extracted.")  # unreachable after relative_name; kept as a last guard
        out.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        with zf.open(info) as src, open(out, "xb") as dst:
            while chunk := src.read(1 << 20):
                size += len(chunk)
                written += len(chunk)
                if size > info.file_size or size > limits.max_entry_bytes or written > limits.max_total_bytes:
                    raise DatasetError(f"{label}: entry '{info.filename}' unpacks to more than its header says; "
                                       "the archive is damaged or crafted. Nothing was extracted.")
                dst.write(chunk)
        with contextlib.suppress(OSError):
            os.chmod(out, 0o644)
