"""What a dataset check found, as data (for the job record and tests) and as text (for the node).

Every finding has a stable `code` (tests and the UI may match on it), the `file` it is about
(relative to the dataset folder; empty for the dataset as a whole) and a `message` that names the
problem and the fix. Problems block training; warnings are shown and training goes on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import DatasetError

# Blocking: nothing usable is left
NO_IMAGES = "NO_IMAGES"
# Warnings: the files (each one skips its item)
UNSAFE_PATH = "UNSAFE_PATH"  # a symlink or a metadata name leading outside the dataset
UNREADABLE_IMAGE = "UNREADABLE_IMAGE"  # truncated, empty, not an image, decompression bomb
UNREADABLE_FILE = "UNREADABLE_FILE"  # a caption or folder this process may not read
MISSING_CAPTION = "MISSING_CAPTION"  # an image without caption: skipped
ORPHAN_CAPTION = "ORPHAN_CAPTION"  # a caption file without image
MISSING_IMAGE = "MISSING_IMAGE"  # a metadata line naming an image that is not there
BAD_METADATA_LINE = "BAD_METADATA_LINE"
CAPTION_ENCODING = "CAPTION_ENCODING"
CAPTION_TOO_LONG = "CAPTION_TOO_LONG"
EMPTY_CAPTION = "EMPTY_CAPTION"
DUPLICATE_NAME = "DUPLICATE_NAME"
NAME_CASE_MISMATCH = "NAME_CASE_MISMATCH"
UNSUPPORTED_FILE = "UNSUPPORTED_FILE"
BAD_FILE_NAME = "BAD_FILE_NAME"  # a name that is not UTF-8 text: skipped (it could not be shown or recorded)
BAD_REPEATS = "BAD_REPEATS"
# Warnings: the pictures and prompts
TOO_FEW_IMAGES = "TOO_FEW_IMAGES"
TOO_MANY_IMAGES = "TOO_MANY_IMAGES"
LOW_RESOLUTION = "LOW_RESOLUTION"
EXTREME_ASPECT = "EXTREME_ASPECT"
BLURRY = "BLURRY"
EXACT_DUPLICATE = "EXACT_DUPLICATE"
NEAR_DUPLICATE = "NEAR_DUPLICATE"
NO_TRIGGER = "NO_TRIGGER"
PLACEHOLDER_UNSET = "PLACEHOLDER_UNSET"

MAX_LINES_PER_CODE = 8  # the node shows the text: a hundred identical lines help nobody


@dataclass(frozen=True)
class Finding:
    code: str
    file: str  # relative to the dataset folder, '/'-separated; "" for the dataset as a whole
    message: str  # the problem and the fix, without the file name

    def __str__(self) -> str:
        return f"{self.file}: {self.message}" if self.file else self.message


@dataclass
class DatasetReport:
    root: str
    problems: list[Finding] = field(default_factory=list)  # block training
    warnings: list[Finding] = field(default_factory=list)  # shown; training goes on
    stats: dict[str, Any] = field(default_factory=dict)  # counts, sizes, buckets: the summary line

    @property
    def ok(self) -> bool:
        return not self.problems

    def codes(self) -> set[str]:
        return {f.code for f in self.problems + self.warnings}

    def files(self, code: str) -> list[str]:
        return [f.file for f in self.problems + self.warnings if f.code == code]

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "ok": self.ok, "problems": [asdict(f) for f in self.problems],
                "warnings": [asdict(f) for f in self.warnings], "stats": self.stats}

    def to_text(self) -> str:
        head = (f"Dataset {self.root}: BLOCKED, {len(self.problems)} problem(s) must be fixed before training"
                if self.problems else f"Dataset {self.root}: ready, {len(self.warnings)} warning(s)")
        lines = [head]
        summary = self.stats.get("summary")
        if summary:
            lines += [f"  {s}" for s in summary]
        for title, items in (("Problems (training cannot start):", self.problems), ("Warnings:", self.warnings)):
            if items:
                lines += ["", title] + _grouped(items)
        return "\n".join(lines)


def _split_fix(message: str) -> tuple[str, str]:
    problem, sep, fix = message.partition(" Fix: ")
    return (problem, fix) if sep else (message, "")


def _grouped(items: list[Finding]) -> list[str]:
    """One line per finding; several of one code with the same fix share a header that states the fix once."""
    out: list[str] = []
    by_code: dict[str, list[Finding]] = {}
    for f in items:
        by_code.setdefault(f.code, []).append(f)
    for code, group in by_code.items():
        fixes = {_split_fix(f.message)[1] for f in group}
        shared = len(group) > 1 and len(fixes) == 1 and "" not in fixes
        if shared:
            out.append(f"- [{code}] {len(group)} files. Fix: {fixes.pop()}")
        for f in group[:MAX_LINES_PER_CODE]:
            text = _split_fix(f.message)[0] if shared else f.message
            out.append(f"    {f.file}: {text}" if shared else f"- [{code}] {Finding(f.code, f.file, text)}")
        if len(group) > MAX_LINES_PER_CODE:
            out.append(f"    … and {len(group) - MAX_LINES_PER_CODE} more")
    return out


class DatasetCheckError(DatasetError):
    """A dataset with blocking problems. `report` holds every finding; the message is its text."""

    def __init__(self, report: DatasetReport):
        self.report = report
        super().__init__(report.to_text())
