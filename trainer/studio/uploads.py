"""Datasets uploaded from the browser: a streamed ZIP (or pictures with captions) → a checked dataset folder.

The bytes go to a temporary file as they arrive (never whole in memory), counted against
LORA_STUDIO_MAX_UPLOAD_BYTES; a ZIP is then imported by `trainer.data.import_zip` with its limits and
confinement, pictures with captions are moved into place in one rename. The dataset is checked
(`check_dataset`); a blocked one is removed again, so a bad upload writes nothing. Who uploaded what is
kept in `<registry>/<name>.json` with the report: only the uploader (or an operator) may delete it.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..data import DatasetCheckError, check_dataset, import_zip
from ..data.captions import CAPTION_EXTENSIONS, NEGATIVE_PROMPT_FILES
from ..data.images import IMAGE_EXTENSIONS
from ..data.safety import relative_name, safe_folder_name
from ..errors import DatasetError
from ..atomic import atomic_folder, write_json_atomic
from .errors import StudioError
from .jobs import Viewer

log = logging.getLogger("lora_studio.studio")

MAX_UPLOAD_ENV = "LORA_STUDIO_MAX_UPLOAD_BYTES"
DEFAULT_MAX_UPLOAD = 4 << 30  # 4 GiB compressed; the ZIP import's own limits then bound what it unpacks
MAX_FILES = 2000  # pictures + captions in one upload without a ZIP
FLAG_CODES = ("BLURRY", "NEAR_DUPLICATE", "EXACT_DUPLICATE", "LOW_RESOLUTION", "UNREADABLE_IMAGE", "EXTREME_ASPECT")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_DATA_FILES = {"metadata.jsonl", *NEGATIVE_PROMPT_FILES}


def max_upload_bytes() -> int:
    raw = os.environ.get(MAX_UPLOAD_ENV, "")
    try:
        return int(raw) if raw.strip() else DEFAULT_MAX_UPLOAD
    except ValueError:
        log.warning("%s=%r is not a number of bytes; using %d", MAX_UPLOAD_ENV, raw, DEFAULT_MAX_UPLOAD)
        return DEFAULT_MAX_UPLOAD


def _too_large(limit: int) -> StudioError:
    return StudioError(413, f"The upload is larger than this server's limit of {limit / 2**20:.0f} MiB. Nothing was "
                            f"kept. Fix: upload fewer or smaller pictures, or ask the operator to raise {MAX_UPLOAD_ENV}.")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass
class Upload:
    """One upload in progress. `add_file(name)` starts the next file, `write(chunk)` appends to it."""

    store: "DatasetStore"
    user: str
    name: str  # the dataset name asked for (the ZIP's stem when empty)
    limit: int
    staging: Path
    written: int = 0
    kind: str = ""  # "zip" or "files"
    files: list[str] = field(default_factory=list)
    source: str = ""
    _fh: Any = None

    def add_file(self, filename: str) -> None:
        self._close_file()
        base = Path(str(filename or "").replace("\\", "/")).name
        suffix = Path(base).suffix.lower()
        if suffix == ".zip":
            if self.kind:
                raise StudioError(400, "Send one ZIP per upload, without other files. Fix: upload the ZIP alone.")
            self.kind, self.source = "zip", base
            self._fh = open(self.staging / "upload.zip", "xb")
            return
        if self.kind == "zip":
            raise StudioError(400, "Send one ZIP per upload, without other files. Fix: upload the ZIP alone.")
        if suffix not in IMAGE_EXTENSIONS and suffix not in CAPTION_EXTENSIONS and base.lower() not in _DATA_FILES:
            raise StudioError(415, f"'{base}' is neither a ZIP nor a picture or caption file. Nothing was kept. Fix: "
                                   f"upload a .zip, or pictures ({', '.join(sorted(IMAGE_EXTENSIONS))}) with their "
                                   ".txt captions.")
        try:
            rel = relative_name(base)
        except DatasetError as e:
            raise StudioError(400, f"File name {base!r}: {e}") from None
        if rel.as_posix().lower() in {f.lower() for f in self.files}:
            raise StudioError(400, f"'{base}' was sent twice. Fix: pick each file once.")
        if len(self.files) >= MAX_FILES:
            raise StudioError(413, f"More than {MAX_FILES} files in one upload. Fix: put them into a ZIP.")
        self.kind = "files"
        self.files.append(rel.as_posix())
        self._fh = open(self.staging / "files" / rel.as_posix(), "xb")

    def write(self, chunk: bytes) -> None:
        if self._fh is None:
            raise StudioError(400, "The upload holds no file. Fix: pick a .zip or pictures and send them again.")
        if self.kind == "zip" and self._fh.tell() == 0 and len(chunk) >= 4 and chunk[:4] not in _ZIP_MAGIC:
            raise self.not_a_zip()  # said at once, not after gigabytes
        self.written += len(chunk)
        if self.written > self.limit:
            raise _too_large(self.limit)
        self._fh.write(chunk)

    def not_a_zip(self) -> StudioError:
        return StudioError(415, f"'{self.source}' is not a ZIP file (it does not start like one). Nothing was kept. "
                                "Fix: make the ZIP with your system's 'compress' command.")

    def _close_file(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def finish(self) -> dict:
        """Import, check, register. Blocking work: the routes run it in a thread."""
        self._close_file()
        try:
            return self.store._commit(self)
        finally:
            self.abort()

    def abort(self) -> None:
        self._close_file()
        shutil.rmtree(self.staging, ignore_errors=True)


class DatasetStore:
    """Datasets in ComfyUI's input folder, and the uploads made through LoRA Studio."""

    def __init__(self, input_dir: str | Path, registry_dir: str | Path, staging_dir: str | Path | None = None):
        self.input_dir = Path(input_dir)
        self.registry = Path(registry_dir)
        # where bytes land while they arrive (ComfyUI: its temp folder); removed after every upload
        self.staging_dir = Path(staging_dir) if staging_dir else Path(tempfile.gettempdir())

    # ------------------------------------------------------------------ listing
    def _entry(self, name: str) -> dict | None:
        p = self.registry / f"{name}.json"
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(p.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else None
        return None

    def list(self, viewer: Viewer) -> list[dict]:
        out = []
        if not self.input_dir.is_dir():
            return out
        for p in sorted(self.input_dir.iterdir(), key=lambda q: q.name.lower()):
            if p.name.startswith(".") or not (p.is_dir() or p.suffix.lower() == ".zip"):
                continue
            entry = self._entry(p.name) or {}
            rep = entry.get("report") or None
            out.append({"name": p.name, "kind": "folder" if p.is_dir() else "zip",
                        "uploaded_by": entry.get("user"), "uploaded": entry.get("uploaded"),
                        "mine": bool(entry) and viewer.may_act(str(entry.get("user"))),
                        "report": None if rep is None else {
                            "ok": rep.get("ok"), "images": (rep.get("stats") or {}).get("images"),
                            "warnings": len(rep.get("warnings") or []), "problems": len(rep.get("problems") or [])}})
        return out

    def info(self, name: str) -> dict:
        path = self._existing(name)
        entry = self._entry(path.name)
        return {"name": path.name, **(entry or {"report": None})}

    def _existing(self, name: str) -> Path:
        try:
            folder = safe_folder_name(str(name or ""))
        except DatasetError as e:
            raise StudioError(400, str(e)) from None
        if folder != name or name.startswith("."):
            raise StudioError(400, f"'{name}' is not a dataset name of the input folder. Fix: pick one from "
                                   "GET /lora_studio/datasets.")
        path = self.input_dir / folder
        if not (path.is_dir() or path.is_file()) or path.is_symlink():
            raise StudioError(404, f"There is no dataset '{name}' in the input folder. Fix: pick one from the list.")
        return path

    # ------------------------------------------------------------------ upload
    def begin(self, user: str, name: str = "", content_length: int | None = None) -> Upload:
        limit = max_upload_bytes()
        if content_length is not None and content_length > limit + (1 << 20):  # headers of the multipart body
            raise _too_large(limit)
        if name:
            try:
                safe_folder_name(name)
            except DatasetError as e:
                raise StudioError(400, str(e)) from None
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="lora_studio-upload-", dir=self.staging_dir))
        (staging / "files").mkdir()
        return Upload(self, user or "default", name, limit, staging)

    def _unique(self, wanted: str) -> str:
        base = safe_folder_name(wanted)
        taken = {p.name.lower() for p in self.input_dir.iterdir()} if self.input_dir.is_dir() else set()
        name, n = base, 1
        while name.lower() in taken or (self.registry / f"{name}.json").exists():
            n += 1
            name = f"{base}-{n}"
        return name

    def _commit(self, up: Upload) -> dict:
        if not up.kind:
            raise StudioError(400, "The upload holds no file. Fix: pick a .zip or pictures and send them again.")
        self.input_dir.mkdir(parents=True, exist_ok=True)
        stem = up.name or (Path(up.source).stem if up.kind == "zip" else f"upload-{datetime.now():%Y%m%d-%H%M%S}")
        try:
            name = self._unique(stem)
        except DatasetError as e:
            raise StudioError(400, str(e)) from None
        target = self.input_dir / name
        try:
            if up.kind == "zip":
                with open(up.staging / "upload.zip", "rb") as fh:
                    if fh.read(4) not in _ZIP_MAGIC:
                        raise up.not_a_zip()
                import_zip(up.staging / "upload.zip", self.input_dir, name=name)
            else:
                # the staging folder may be on another disk: copy beside the target, then rename in one step
                with atomic_folder(target, overwrite=False) as hidden:
                    shutil.copytree(up.staging / "files", hidden, dirs_exist_ok=True)
        except DatasetError as e:
            raise StudioError(422, str(e)) from None
        try:
            ds, rep = check_dataset(target, resolution=512, allowed_roots=[self.input_dir])
        except DatasetCheckError as e:
            _remove(target)
            raise StudioError(422, f"{e}\nNothing was kept.") from None
        except DatasetError as e:
            _remove(target)
            raise StudioError(422, f"{e} Nothing was kept.") from None
        except BaseException:
            _remove(target)
            raise
        report = rep.to_dict()
        captions = {s.path.relative_to(ds.root).as_posix(): s.caption for s in ds.samples}
        entry = {"name": name, "user": up.user, "uploaded": _now(), "source": up.source or f"{len(up.files)} files",
                 "report": report, "report_text": rep.to_text(), "flagged": flagged(report, captions)}
        try:
            self.registry.mkdir(parents=True, exist_ok=True)
            # the name is ours: _unique skipped every registered one and the folder was just created under it
            write_json_atomic(self.registry / f"{name}.json", entry, overwrite=True)
        except BaseException:
            _remove(target)
            raise
        log.info("dataset %s uploaded by %s (%d bytes)", name, up.user, up.written)
        return entry

    # ------------------------------------------------------------------ delete / thumbnails
    def delete(self, name: str, viewer: Viewer) -> None:
        path = self._existing(name)
        entry = self._entry(path.name)
        if entry is None:
            raise StudioError(403, f"'{name}' was not uploaded through LoRA Studio, so it cannot be deleted here. "
                                   "Fix: ask the server's operator.")
        if not viewer.may_act(str(entry.get("user"))):
            raise StudioError(403, f"'{name}' was uploaded by another user; only they can delete it.")
        _remove(path)
        with contextlib.suppress(FileNotFoundError):
            (self.registry / f"{path.name}.json").unlink()

    def picture(self, name: str, file: str) -> Path:
        """A picture of a dataset, for its report's thumbnails; confined to the dataset's folder."""
        root = self._existing(name)
        try:
            rel = relative_name(str(file or ""), strict=False)
        except DatasetError as e:
            raise StudioError(400, f"File {file!r}: {e}") from None
        path = root.joinpath(*rel.parts)
        try:
            resolved, base = path.resolve(), root.resolve()
        except OSError as e:
            raise StudioError(400, f"File {file!r} cannot be resolved ({e}).") from None
        if base not in resolved.parents or resolved.suffix.lower() not in IMAGE_EXTENSIONS or not resolved.is_file():
            raise StudioError(404, f"'{file}' is not a picture of dataset '{name}'.")
        return resolved


def flagged(report: dict, captions: dict[str, str]) -> list[dict]:
    """The pictures the report flags (blurry, duplicates, too small, unreadable), with their captions."""
    by_file: dict[str, dict] = {}
    for f in (report.get("problems") or []) + (report.get("warnings") or []):
        if f.get("code") in FLAG_CODES and f.get("file"):
            e = by_file.setdefault(f["file"], {"file": f["file"], "codes": [], "messages": [],
                                               "caption": captions.get(f["file"], "")})
            e["codes"].append(f["code"])
            e["messages"].append(f["message"])
    return list(by_file.values())


def _remove(path: Path) -> None:
    """Out of the listing in one rename, then deleted."""
    if not path.exists():
        return
    trash = path.with_name(f".deleting-{path.name}-{secrets.token_hex(3)}")
    os.rename(path, trash)
    if trash.is_dir():
        shutil.rmtree(trash, ignore_errors=True)
    else:
        trash.unlink(missing_ok=True)
