"""Find (image, caption) pairs in a dataset folder.

Layouts understood:
- the guide's: `images/` + `metadata.jsonl` with lines `{"file": "0001.png", "prompt": "..."}`
- the `imagefolder` convention: `metadata.jsonl` with `file_name` / `text`
- caption files beside images: `0001.png` + `0001.txt` (or `.caption`)
The trigger token replaces the placeholder (`<my_token>` by default) in every prompt.
Every path a metadata line names must stay inside the dataset folder.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatasetError
from .images import IMAGE_EXTENSIONS

log = logging.getLogger("lora_studio.data")

CAPTION_EXTENSIONS = (".txt", ".caption")
FILE_KEYS = ("file", "file_name", "image")
PROMPT_KEYS = ("prompt", "text", "caption")


@dataclass
class Sample:
    path: Path
    caption: str
    repeats: int = 1


@dataclass
class Dataset:
    root: Path
    samples: list[Sample]
    warnings: list[str] = field(default_factory=list)

    def content_hash(self) -> str:
        """sha256 over every image's bytes and caption: the job record's dataset identity."""
        h = hashlib.sha256()
        for s in sorted(self.samples, key=lambda s: str(s.path)):
            h.update(s.path.relative_to(self.root).as_posix().encode())
            h.update(_file_sha256(s.path).encode())
            h.update(s.caption.encode())
            h.update(str(s.repeats).encode())
        return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def apply_trigger(prompt: str, trigger: str, placeholder: str) -> str:
    if placeholder and placeholder in prompt:
        return prompt.replace(placeholder, trigger) if trigger else prompt.replace(placeholder, "").strip()
    return prompt


def inside(root: Path, candidate: Path) -> bool:
    """True if `candidate` (symlinks resolved) lies inside `root`."""
    try:
        candidate.resolve().relative_to(root.resolve())
        return True
    except (ValueError, OSError):
        return False


def load_dataset(root: str | Path, trigger_token: str = "", placeholder: str = "<my_token>") -> Dataset:
    root = Path(root).expanduser()
    if not str(root).strip() or not root.exists():
        raise DatasetError(f"Dataset folder not found: '{root}'. Fix: give the folder that holds images/ and "
                           "metadata.jsonl (or images with .txt captions).")
    if not root.is_dir():
        raise DatasetError(f"Dataset path is not a folder: '{root}'. Fix: unpack the ZIP first or give its folder.")
    if not os.access(root, os.R_OK | os.X_OK):
        raise DatasetError(f"Dataset folder '{root}' cannot be read by this process. Fix: check its permissions.")
    meta = root / "metadata.jsonl"
    if not meta.exists() and (root / "images" / "metadata.jsonl").exists():
        meta = root / "images" / "metadata.jsonl"
    ds = _from_metadata(root, meta) if meta.exists() else _from_caption_files(root)
    for s in ds.samples:
        s.caption = apply_trigger(s.caption, trigger_token, placeholder)
    if not ds.samples:
        raise DatasetError(f"No training images found in '{root}'. Fix: put images ({', '.join(IMAGE_EXTENSIONS)}) "
                           "into images/ with a metadata.jsonl, or beside .txt caption files.")
    if trigger_token and not any(trigger_token in s.caption for s in ds.samples):
        ds.warnings.append(f"The trigger token '{trigger_token}' appears in no prompt: write '{placeholder}' "
                           "where it belongs in metadata.jsonl or the caption files.")
    for w in ds.warnings:
        log.warning(w)
    return ds


def _from_metadata(root: Path, meta: Path) -> Dataset:
    ds = Dataset(root=root, samples=[])
    base_dirs = [meta.parent, root / "images", root]
    with open(meta, "rb") as f:
        raw_lines = f.read().splitlines()
    for no, raw in enumerate(raw_lines, 1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            ds.warnings.append(f"metadata.jsonl line {no} skipped: not a JSON object in UTF-8 ({e}).")
            continue
        if not isinstance(entry, dict):
            ds.warnings.append(f"metadata.jsonl line {no} skipped: expected an object like "
                               '{"file": "0001.png", "prompt": "..."}.')
            continue
        name = next((entry[k] for k in FILE_KEYS if isinstance(entry.get(k), str)), None)
        prompt = next((entry[k] for k in PROMPT_KEYS if isinstance(entry.get(k), str)), None)
        if name is None or prompt is None:
            ds.warnings.append(f"metadata.jsonl line {no} skipped: needs \"file\" and \"prompt\" "
                               "(or \"file_name\" and \"text\").")
            continue
        if os.path.isabs(name) or ".." in Path(name).parts:
            raise DatasetError(f"metadata.jsonl line {no} names '{name}', a path outside the dataset folder. "
                               "Fix: use file names relative to images/ (e.g. \"0001.png\").")
        path = next((d / name for d in base_dirs if (d / name).is_file()), None)
        if path is None:
            ds.warnings.append(f"metadata.jsonl line {no}: image '{name}' not found; skipped.")
            continue
        if not inside(root, path):
            raise DatasetError(f"metadata.jsonl line {no}: '{name}' resolves outside the dataset folder "
                               "(a symlink?). Fix: copy the image into the dataset instead of linking it.")
        ds.samples.append(Sample(path=path, caption=prompt.strip()))
    return ds


def _from_caption_files(root: Path) -> Dataset:
    ds = Dataset(root=root, samples=[])
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()):
        if not inside(root, path):
            ds.warnings.append(f"{path.name} skipped: it links outside the dataset folder.")
            continue
        cap = next((path.with_suffix(e) for e in CAPTION_EXTENSIONS if path.with_suffix(e).is_file()), None)
        if cap is None:
            ds.warnings.append(f"{path.relative_to(root)} has no caption file ({path.stem}.txt); skipped.")
            continue
        try:
            text = cap.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            text = cap.read_bytes().decode("latin-1")
            ds.warnings.append(f"{cap.name} is not UTF-8; read as Latin-1. Fix: save captions as UTF-8.")
        ds.samples.append(Sample(path=path, caption=" ".join(text.split())))
    return ds
