"""Find (image, caption) pairs in a dataset folder.

Layouts understood, also mixed and nested:
- the guide's: `images/` + `metadata.jsonl` with lines `{"file": "0001.png", "prompt": "..."}`
- the `imagefolder` convention: `metadata.jsonl` with `file_name` / `text`, in any folder, names
  relative to that folder
- caption files beside images: `0001.png` + `0001.txt` (or `0001.caption`)
- kohya repeat folders: `10_concept/0001.png` trains each of its pictures 10 times per epoch; the
  captions come from the files, the folder's concept is not a caption
- an optional negative-prompts file (`negative_prompts.txt`, one prompt per line) for previews
The trigger token replaces the placeholder (`<my_token>` by default) in every prompt.
Every path stays inside the dataset folder; what cannot be used is reported, not guessed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatasetError
from . import findings as F
from .captions import (CAPTION_EXTENSIONS, NEGATIVE_PROMPT_FILES, NOT_CAPTIONS, apply_trigger, decode_text,
                       normalize_caption, read_negative_prompts, read_text, text_encoding)
from .findings import Finding
from .images import IMAGE_EXTENSIONS, image_size
from .quality import file_sha256 as _file_sha256
from .safety import MAX_METADATA_BYTES, inside, is_text, relative_name, shown, walk

__all__ = ["Dataset", "Sample", "apply_trigger", "check_root", "discover", "inside"]

log = logging.getLogger("lora_studio.data")

FILE_KEYS = ("file", "file_name", "image")
PROMPT_KEYS = ("prompt", "text", "caption")
METADATA_FILE = "metadata.jsonl"
# kohya: "<repeats>_<concept>". Above this it is more likely a year ("2024_urlaub") than a repeat count.
REPEAT_FOLDER = re.compile(r"^(\d+)_(.+)$")
MAX_REPEATS = 100


@dataclass
class Sample:
    path: Path
    caption: str
    repeats: int = 1
    size: tuple[int, int] | None = None  # (width, height) as shown (EXIF applied); set by check_dataset
    concept: str = ""  # the kohya folder's concept ("10_fox" -> "fox"): informational, never the caption


@dataclass
class Dataset:
    root: Path
    samples: list[Sample]
    warnings: list[str] = field(default_factory=list)
    negative_prompts: list[str] = field(default_factory=list)  # the guide's "Prompt-Negativliste"
    findings: list[Finding] = field(default_factory=list)  # discovery's warnings, as data
    # discovery's blocking findings: none today. An unsafe path skips its item (a warning); only an empty
    # dataset blocks, and that is judged by the callers once every picture has been decoded.
    problems: list[Finding] = field(default_factory=list)

    @property
    def negative_prompt(self) -> str:
        """All negative prompts as one, for a preview pipeline that takes a single string."""
        return ", ".join(self.negative_prompts)

    def image_sizes(self) -> list[tuple[int, int]]:
        """(width, height) per sample, from the headers where check_dataset has not measured them yet."""
        for s in self.samples:
            if s.size is None:
                s.size = image_size(s.path)
        return [s.size for s in self.samples]  # type: ignore[misc]

    def content_hash(self) -> str:
        """sha256 over every image's bytes and caption: the job record's dataset identity."""
        h = hashlib.sha256()
        for s in sorted(self.samples, key=lambda s: str(s.path)):
            h.update(s.path.relative_to(self.root).as_posix().encode())
            h.update(_file_sha256(s.path).encode())
            h.update(s.caption.encode())
            h.update(str(s.repeats).encode())
        return h.hexdigest()


def check_root(root: str | Path) -> Path:
    """The dataset folder exists, is a folder and may be read. Returns it resolved."""
    raw = str(root) if root is not None else ""
    if not raw.strip():
        raise DatasetError("No dataset folder given. Fix: give the folder that holds images/ and metadata.jsonl "
                           "(or images with .txt captions).")
    root = Path(root).expanduser()
    if not is_text(str(root)):
        raise DatasetError(f"The dataset folder's path '{shown(root)}' is not valid UTF-8 text (\\x.. marks the bytes "
                           "that are not), so it cannot be shown or saved in the job record. Fix: rename the folder "
                           "(letters, digits, '-' and '_' are always safe).")
    if not root.exists():
        raise DatasetError(f"Dataset folder not found: '{root}'. Fix: give the folder that holds images/ and "
                           "metadata.jsonl (or images with .txt captions).")
    if not root.is_dir():
        hint = "unpack the ZIP first (or use the ZIP import)" if root.suffix.lower() == ".zip" else "give its folder"
        raise DatasetError(f"Dataset path is not a folder: '{root}'. Fix: {hint}.")
    if not os.access(root, os.R_OK | os.X_OK):
        raise DatasetError(f"Dataset folder '{root}' cannot be read by this process. Fix: check its permissions "
                           "(the server's user needs read and execute rights on it).")
    return root.resolve()


def no_images_finding(root: Path) -> Finding:
    return Finding(F.NO_IMAGES, "", f"No training images found in '{root}' that can be used. Fix: put images "
                   f"({', '.join(IMAGE_EXTENSIONS)}) into images/ with a metadata.jsonl, or beside .txt caption "
                   "files; the warnings below say why the files found were skipped.")


def trigger_findings(ds: Dataset, raw_captions: list[str], trigger: str, placeholder: str) -> list[Finding]:
    out = []
    if trigger:
        lacking = [s for s in ds.samples if trigger not in s.caption]
        if lacking and len(lacking) == len(ds.samples):
            out.append(Finding(F.NO_TRIGGER, "", f"the trigger token '{trigger}' appears in no prompt. Fix: write "
                               f"'{placeholder}' where the concept belongs in metadata.jsonl or the caption files."))
        else:
            fix = f"add '{placeholder}' to its prompt, or leave it out on purpose for a regularisation image."
            out += [Finding(F.NO_TRIGGER, display_path(ds.root, s.path),
                            f"prompt lacks the trigger token '{trigger}'. Fix: {fix}") for s in lacking]
    elif placeholder and any(placeholder in c for c in raw_captions):
        out.append(Finding(F.PLACEHOLDER_UNSET, "", f"prompts contain '{placeholder}' but no trigger token is set, so "
                           "it is removed from them. Fix: set a trigger token (a rare word such as 'sks_fox')."))
    return out


def display_path(root: Path, path: Path) -> str:
    """`path` as the report shows it: relative to the dataset folder where it lies inside it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


class _Discovery:
    """One pass over a dataset folder; collects samples and findings."""

    def __init__(self, root: Path):
        self.root = root
        self.ds = Dataset(root=root, samples=[])
        self.covered: set[Path] = set()

    def warn(self, code: str, path: Path | str, message: str) -> None:
        self.ds.findings.append(Finding(code, display_path(self.root, path) if isinstance(path, Path) else path, message))

    def run(self) -> Dataset:
        w = walk(self.root)
        for path, target in w.unsafe:
            self.warn(F.UNSAFE_PATH, path, f"is a symlink to '{shown(target)}', outside the dataset folder; "
                      "skipped (nothing outside the dataset is read). Fix: copy the file into the dataset instead of linking it.")
        for path in w.unreadable:
            self.warn(F.UNREADABLE_FILE, path, "this process may not read it; skipped. Fix: check its permissions.")
        for path in w.undecodable:
            what = "folder (and everything in it)" if path.is_dir() else "file"
            self.warn(F.BAD_FILE_NAME, shown(display_path(self.root, path)), f"this {what} is skipped: its name is not valid "
                      "UTF-8 text (\\x.. marks the bytes that are not), so it could not be shown, logged or saved "
                      "in the job record. Fix: rename it (letters, digits, '-' and '_' are always safe).")
        images = [p for p in w.files if p.suffix.lower() in IMAGE_EXTENSIONS]
        self.images = self._drop_case_collisions(images)
        self.by_lower = {p.as_posix().lower(): p for p in self.images}
        captions = [p for p in w.files if p.suffix.lower() in CAPTION_EXTENSIONS and p.name.lower() not in NOT_CAPTIONS]
        self.captions: dict[tuple[Path, str], Path] = {}
        for c in sorted(captions, key=lambda c: (c.suffix.lower() != ".txt", str(c))):  # .txt wins over .caption
            self.captions.setdefault((c.parent, c.stem.lower()), c)
        metas = [p for p in w.files if p.name.lower() == METADATA_FILE]
        for meta in sorted(metas, key=lambda p: (len(p.parts), str(p))):
            self._read_metadata(meta)
        self._caption_files(bool(metas))
        self._orphans()
        self._negative_prompts([p for p in w.files if p.name.lower() in NEGATIVE_PROMPT_FILES])
        return self.ds

    def _drop_case_collisions(self, images: list[Path]) -> list[Path]:
        seen: dict[str, Path] = {}
        kept = []
        for p in images:
            key = p.as_posix().lower()
            if key in seen:
                self.warn(F.DUPLICATE_NAME, p, f"differs from '{display_path(self.root, seen[key])}' only in upper/lower case; "
                          "on Windows and macOS they are one file. Skipped. Fix: rename one of them.")
                continue
            seen[key] = p
            kept.append(p)
        return kept

    def _repeats(self, path: Path) -> tuple[int, str]:
        for folder in reversed(path.relative_to(self.root).parts[:-1]):
            m = REPEAT_FOLDER.match(folder)
            if m:
                n = int(m.group(1))
                if 1 <= n <= MAX_REPEATS:
                    return n, m.group(2)
                self.warn(F.BAD_REPEATS, path, f"folder '{folder}' looks like a kohya repeat folder, but {n} "
                          f"repeats is outside 1–{MAX_REPEATS}; trained once per epoch. Fix: rename it "
                          f"(e.g. '10_{m.group(2)}') if you meant repeats.")
                return 1, ""
        return 1, ""

    def _add(self, path: Path, caption: str, where: str) -> None:
        caption = normalize_caption(caption)
        if not caption:
            self.warn(F.EMPTY_CAPTION, path, f"its caption ({where}) is empty; it trains as an unconditioned image. "
                      "Fix: describe the picture and include the placeholder for the concept.")
        repeats, concept = self._repeats(path)
        self.ds.samples.append(Sample(path=path, caption=caption, repeats=repeats, concept=concept))
        self.covered.add(path)

    # ------------------------------------------------------------ metadata.jsonl
    def _read_metadata(self, meta: Path) -> None:
        where = display_path(self.root, meta)
        try:
            if meta.stat().st_size > MAX_METADATA_BYTES:
                self.warn(F.BAD_METADATA_LINE, meta, f"is larger than {MAX_METADATA_BYTES >> 20} MiB; ignored. "
                          "Fix: one short line per image is enough.")
                return
            data = meta.read_bytes()
        except OSError as e:
            self.warn(F.UNREADABLE_FILE, meta, f"cannot be read ({e.strerror or e}); ignored. "
                      "Fix: check its permissions.")
            return
        wide = text_encoding(data)
        if wide:  # UTF-16/32: its line breaks are two or four bytes, so decode the whole file before splitting
            self.warn(F.CAPTION_ENCODING, where, f"is saved as {wide[1]}, not UTF-8; read as {wide[1]}. "
                      "Fix: save the file as UTF-8.")
        lines = decode_text(data)[0].splitlines() if wide else data.splitlines()
        for no, raw in enumerate(lines, 1):
            if raw.strip():
                self._metadata_line(meta, where, no, raw)

    def _metadata_line(self, meta: Path, where: str, no: int, raw: bytes | str) -> None:
        text, enc = (raw, None) if isinstance(raw, str) else decode_text(raw)
        if enc:
            self.warn(F.CAPTION_ENCODING, where, f"line {no} is not UTF-8; read as {enc}. Fix: save the file as UTF-8.")
        try:
            entry = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:  # RecursionError: "[[[[..." nested past the stack
            why = f"{e.msg}, column {e.colno}" if isinstance(e, json.JSONDecodeError) else "nested too deeply"
            self.warn(F.BAD_METADATA_LINE, where, f"line {no} is not valid JSON ({why}); skipped. "
                      'Fix: one object per line, e.g. {"file": "0001.png", "prompt": "photo of <my_token>"}.')
            return
        entry = entry if isinstance(entry, dict) else {}
        name = next((entry[k] for k in FILE_KEYS if isinstance(entry.get(k), str)), None)
        prompt = next((entry[k] for k in PROMPT_KEYS if isinstance(entry.get(k), str)), None)
        if name is not None and not is_text(name):
            self.warn(F.BAD_FILE_NAME, where, f"line {no} names '{shown(name)}', which is not valid text (a lone "
                      "UTF-16 surrogate such as \\udcff); skipped. Fix: write the file name as it is, in UTF-8.")
            return
        if prompt is not None and not is_text(prompt):
            self.warn(F.CAPTION_ENCODING, where, f"line {no}'s prompt holds a broken character (a lone UTF-16 "
                      "surrogate such as \\ud83d, half an emoji); replaced by \ufffd. Fix: write the character whole.")
            prompt = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in prompt)
        if name is None or prompt is None:
            self.warn(F.BAD_METADATA_LINE, where, f"line {no} skipped: it needs \"file\" and \"prompt\" (or "
                      '"file_name" and "text") as strings. Fix: write it like '
                      '{"file": "0001.png", "prompt": "photo of <my_token>"}.')
            return
        try:
            rel = relative_name(name, strict=False)  # an existing file may be called "photo: 1.png" on Linux
        except DatasetError as e:
            self.warn(F.UNSAFE_PATH, where, f"line {no} skipped: {e}")
            return
        path = self._find(meta.parent, rel, where, no, name)
        if path is None:
            return
        if path in self.covered:
            self.warn(F.DUPLICATE_NAME, where, f"line {no} names '{name}' again; the first line is used. "
                      "Fix: one line per image (copy the file if it should train more often).")
            return
        self._add(path, prompt, f"{where} line {no}")

    def _find(self, base: Path, rel, where: str, no: int, name: str) -> Path | None:
        line = f"{where} line {no}"
        for cand in (base / rel, base / "images" / rel):
            if cand.is_symlink() or cand.exists():
                if not inside(self.root, cand):
                    self.warn(F.UNSAFE_PATH, display_path(self.root, cand), f"{line} names it, and it resolves outside the "
                              "dataset folder; skipped. Fix: copy the image into the dataset instead of linking it.")
                    return None
                if cand.is_file():
                    if cand.suffix.lower() not in IMAGE_EXTENSIONS:
                        self.warn(F.UNSUPPORTED_FILE, cand, f"{line} names it, but only {', '.join(IMAGE_EXTENSIONS)} "
                                  "are used; skipped. Fix: convert it to PNG or JPEG.")
                        return None
                    return cand
        for cand in (base / rel, base / "images" / rel):
            match = self.by_lower.get(cand.as_posix().lower())
            if match is not None:
                self.warn(F.NAME_CASE_MISMATCH, match, f"{line} names it '{name}' (different upper/lower case); used. "
                          "Fix: write the name exactly as the file is called, or it breaks on Linux servers.")
                return match
        self.warn(F.MISSING_IMAGE, where, f"line {no} names '{name}', which is not in the dataset; skipped. "
                  "Fix: add the image or remove the line.")
        return None

    # ------------------------------------------------------------ caption files
    def _caption_files(self, has_metadata: bool) -> None:
        stems: dict[tuple[Path, str], list[Path]] = {}
        for img in self.images:
            stems.setdefault((img.parent, img.stem.lower()), []).append(img)
        for img in self.images:
            if img in self.covered:
                continue
            cap = self.captions.get((img.parent, img.stem.lower()))
            if cap is None:
                listed = " is listed in no metadata.jsonl line and" if has_metadata else ""
                self.warn(F.MISSING_CAPTION, img, f"{listed} has no caption file; skipped. Fix: add {img.stem}.txt "
                          "beside it with a description that contains the placeholder.".lstrip())
                continue
            twins = stems[(img.parent, img.stem.lower())]
            if len(twins) > 1:
                self.warn(F.DUPLICATE_NAME, img, f"shares the caption file {cap.name} with "
                          f"{', '.join(t.name for t in twins if t != img)}. Fix: give each image its own name.")
            read = self._read_text_file(cap, read_text, "its image is skipped", "captions")
            if read is None:
                continue
            text, _, truncated = read
            if truncated:
                self.warn(F.CAPTION_TOO_LONG, cap, "is longer than a caption can be; only its start is used. "
                          "Fix: keep captions to a sentence or a tag list.")
            self._add(img, text, cap.name)

    def _orphans(self) -> None:
        image_keys = {(p.parent, p.stem.lower()) for p in self.images}
        for key, cap in sorted(self.captions.items(), key=lambda kv: str(kv[1])):
            if key not in image_keys:
                self.warn(F.ORPHAN_CAPTION, cap, "is a caption file without an image of the same name; ignored. "
                          "Fix: add the image, fix the name, or delete the caption.")

    def _negative_prompts(self, files: list[Path]) -> None:
        if not files:
            return
        path = min(files, key=lambda p: (len(p.parts), str(p)))  # the one nearest the dataset root
        read = self._read_text_file(path, read_negative_prompts, "no negative prompts are used", "it")
        if read is not None:
            self.ds.negative_prompts = read[0]

    def _read_text_file(self, path: Path, read, lost: str, save: str) -> tuple | None:
        """`read(path)` -> (content, encoding or None, ...); None when unreadable. Both troubles become findings."""
        try:
            out = read(path)
        except OSError as e:
            self.warn(F.UNREADABLE_FILE, path, f"cannot be read ({e.strerror or e}); {lost}. Fix: check its permissions.")
            return None
        if out[1]:
            self.warn(F.CAPTION_ENCODING, path, f"is not UTF-8; read as {out[1]}. Fix: save {save} as UTF-8.")
        return out


def discover(root: Path) -> Dataset:
    """Walk an already checked dataset folder; per-file trouble becomes findings, never an exception."""
    return _Discovery(root).run()
