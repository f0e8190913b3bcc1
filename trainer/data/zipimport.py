"""Import an uploaded ZIP (the guide's "Datensatz importieren") into a new dataset folder.

Everything is checked before the first byte is written: the archive opens, it holds at most
`max_entries` entries, what it would write stays within `max_total_bytes` and within the free disk space,
neither one large entry nor the whole archive is compressed more than `max_ratio` : 1 (a ZIP bomb's
signature: a bomb of many small entries passes every per-entry check, so the ratio is also taken over
everything extracted against the ZIP file's own size), no two entries share their data (the
"overlapping files" bomb), every name is a plain relative path (no '..', no absolute or
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
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..atomic import atomic_folder
from ..errors import DatasetError
from .captions import CAPTION_EXTENSIONS, NEGATIVE_PROMPT_FILES
from .discover import REPEAT_FOLDER
from .images import IMAGE_EXTENSIONS
from .safety import relative_name, safe_folder_name

log = logging.getLogger("lora_studio.data.zip")

MAX_ZIP_ENTRIES = 10_000  # 150 pictures with captions are 300; this leaves room for big collections
# 4 GiB written at most: 150 pictures of 24 MB (16-bit 12 MP PNGs) fit; a ZIP filling a shared server's disk does not
MAX_ZIP_TOTAL_BYTES = 4 << 30
MAX_ZIP_ENTRY_BYTES = 1 << 30  # 1 GiB per file: far above any photo (and above load_rgb's pixel limit)
MAX_ZIP_RATIO = 200  # deflate reaches ~1000:1 only on repetitive data; pictures compress ~1:1, text ~5:1
RATIO_MIN_BYTES = 1 << 20  # small files may compress extremely (an all-white PNG's rows): judge large ones only
# The whole archive is judged once it would write this much: below it even an extreme ratio cannot hurt, and a
# tiny dataset of flat-colour PNGs and captions (a few KiB zipped) may well compress 300:1.
RATIO_MIN_TOTAL_BYTES = 32 << 20
DISK_RESERVE_BYTES = 256 << 20  # an import must leave the disk this much room: a full disk breaks everyone's runs
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


def _human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def plan_zip(zf: zipfile.ZipFile, label: str, limits: ZipLimits,
             archive_bytes: int | None = None) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Validate every entry; return the (entry, relative target) pairs to extract. Raises DatasetError.

    `archive_bytes`: the ZIP file's size, for the whole-archive ratio (default: the entries' compressed sizes).
    """
    infos = zf.infolist()
    fix_zip = "Fix: make a new ZIP of the dataset folder with your system's 'compress' command."
    if len(infos) > limits.max_entries:
        raise DatasetError(f"{label} holds {len(infos)} entries, more than the limit of {limits.max_entries}. "
                           "Fix: upload only the dataset (pictures, captions, metadata.jsonl).")
    _check_overlaps(infos, label, fix_zip)
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
            raise DatasetError(f"{label}: entry '{info.filename}' unpacks to {_human(info.file_size)}, more than the "
                               f"limit of {_human(limits.max_entry_bytes)} per file. Nothing was extracted. "
                               "Fix: downscale or remove that file.")
        if info.file_size >= RATIO_MIN_BYTES and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            ratio = info.file_size / max(info.compress_size, 1)
            raise DatasetError(f"{label}: entry '{info.filename}' is compressed {ratio:.0f}:1, more than the limit "
                               f"of {limits.max_ratio:.0f}:1 — the mark of a ZIP bomb, not of pictures. Nothing was "
                               f"extracted. {fix_zip}")
        if not _wanted(rel):
            log.info("%s: skipping '%s' (not a picture, caption or metadata file)", label, info.filename)
            continue
        planned.append((info, rel))
    _check_budget(planned, label, limits, archive_bytes, fix_zip)
    planned = _unwrap(planned)
    _check_collisions(planned, label)
    if not any(rel.suffix.lower() in IMAGE_EXTENSIONS for _, rel in planned):
        raise DatasetError(f"{label} holds no pictures ({', '.join(IMAGE_EXTENSIONS)}). Nothing was extracted. "
                           "Fix: zip the folder with images/ and metadata.jsonl (or images with .txt captions).")
    return planned


def _check_budget(planned, label: str, limits: ZipLimits, archive_bytes: int | None, fix_zip: str) -> None:
    """What would be written, as a whole: the size budget and the archive's overall compression ratio.

    Per-entry checks alone let through a bomb of many entries just under each limit (300 entries of 1 MiB
    of zeros: 376 KB zipped, 301 MB written), so the sum is judged against the ZIP's real size on disk."""
    total = sum(info.file_size for info, _ in planned)
    if total > limits.max_total_bytes:
        raise DatasetError(f"{label} would write {_human(total)}, more than the limit of "
                           f"{_human(limits.max_total_bytes)} for one dataset. Nothing was extracted. "
                           "Fix: downscale the pictures or split the dataset.")
    packed = archive_bytes if archive_bytes is not None else sum(info.compress_size for info, _ in planned)
    ratio = total / max(packed, 1)
    if total >= RATIO_MIN_TOTAL_BYTES and ratio > limits.max_ratio:
        raise DatasetError(f"{label} ({_human(packed)}) would write {_human(total)}: the archive as a whole is "
                           f"compressed {ratio:.0f}:1, more than the limit of {limits.max_ratio:.0f}:1 — the mark of "
                           f"a ZIP bomb, not of pictures. Nothing was extracted. {fix_zip}")


def _check_overlaps(infos: list[zipfile.ZipInfo], label: str, fix_zip: str) -> None:
    """Two entries whose data overlap (the "overlapping files" bomb: thousands of entries, one kernel of data).

    An entry's data starts after its 30-byte local header and its name; the next entry cannot start sooner
    than that plus its compressed size (extra fields and a data descriptor only push it later)."""
    def name_len(info: zipfile.ZipInfo) -> int:
        return len(info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437", "replace"))

    ordered = sorted(infos, key=lambda i: i.header_offset)
    for a, b in zip(ordered, ordered[1:]):
        if b.header_offset < a.header_offset + 30 + name_len(a) + a.compress_size:
            raise DatasetError(f"{label}: entries '{a.filename}' and '{b.filename}' share their data — a crafted "
                               f"archive (a ZIP bomb), not a zipped folder. Nothing was extracted. {fix_zip}")


def _check_disk(dest_parent: Path, planned, label: str) -> None:
    """Enough room for everything, with a reserve left for the other users of the disk."""
    need = sum(info.file_size for info, _ in planned)
    probe = dest_parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return  # unknown: the streamed extraction still stops cleanly on a full disk
    if need + DISK_RESERVE_BYTES > free:
        raise DatasetError(f"{label} needs {_human(need)} in '{dest_parent}', but only {_human(free)} are free there "
                           f"(an import leaves at least {_human(DISK_RESERVE_BYTES)} for others). Nothing was "
                           "extracted. Fix: free disk space, or ask the server operator for more room.")


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
            planned = plan_zip(zf, label, limits, archive_bytes=zip_path.stat().st_size)
            _check_disk(dest_parent, planned, label)
            with atomic_folder(target, overwrite=False) as tmp:
                _extract(zf, planned, tmp, label, limits)
    except FileExistsError:  # appeared while we extracted
        raise DatasetError(f"A folder '{folder}' appeared in '{dest_parent}' during the import. Nothing was "
                           "extracted. Fix: import again under another name.") from None
    except UnicodeDecodeError:  # zipfile decodes every name on open; the UTF-8 flag was set on bytes that are not
        raise DatasetError(f"{label} has an entry name that is marked as UTF-8 but is not valid UTF-8 text. Nothing "
                           "was extracted. Fix: make a new ZIP with your system's 'compress' command, or rename "
                           "the file and zip again.") from None
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
