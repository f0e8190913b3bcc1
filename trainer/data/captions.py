"""Caption text: reading it safely, the trigger token, and the per-step caption options.

`shuffle_tags` and `apply_caption_dropout` are pure: given the same caption and the same RNG state
they return the same text, so a seeded run stays reproducible. They take either a `random.Random`
or a `torch.Generator` (the training loop's data-order generator).
"""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Union

from ..errors import ConfigError, Problem
from .safety import MAX_CAPTION_BYTES

log = logging.getLogger("lora_studio.data")

CAPTION_EXTENSIONS = (".txt", ".caption")
# The guide's "Prompt-Negativliste": one negative prompt per line, '#' starts a comment.
NEGATIVE_PROMPT_FILES = ("negative_prompts.txt", "negative_prompt.txt", "negatives.txt")
# Text files that sit in datasets but caption nothing.
NOT_CAPTIONS = {*NEGATIVE_PROMPT_FILES, "readme.txt", "license.txt", "licence.txt", "credits.txt",
                "requirements.txt"}

Rng = Union[random.Random, "torch.Generator"]  # noqa: F821 - torch is imported only when a Generator is used


_BOMS = ((b"\xff\xfe\x00\x00", "utf-32-le", "UTF-32"), (b"\x00\x00\xfe\xff", "utf-32-be", "UTF-32"),
         (b"\xff\xfe", "utf-16-le", "UTF-16"), (b"\xfe\xff", "utf-16-be", "UTF-16"))


def text_encoding(raw: bytes) -> tuple[str, str] | None:
    """(codec, name) for UTF-16/UTF-32 text: Windows' Notepad saves "Unicode" as UTF-16 with a BOM; without
    a BOM, ASCII-heavy UTF-16 shows as a NUL in every other byte. None for anything else."""
    for bom, codec, name in _BOMS:
        if raw.startswith(bom):
            return codec, name
    sample = raw[:4096]
    if len(sample) >= 4 and sample.count(0) >= len(sample) // 3:  # no caption or JSON has NULs otherwise
        odd, even = sample[1::2].count(0), sample[0::2].count(0)
        return ("utf-16-le", "UTF-16") if odd > even else ("utf-16-be", "UTF-16")
    return None


def decode_text(raw: bytes) -> tuple[str, str | None]:
    """Bytes → text. UTF-8 (with or without BOM) first; UTF-16/32 by their BOM (or their NULs); else
    Windows-1252, which is what German Windows editors save as "ANSI". Returns (text, name of the
    encoding used when it was not UTF-8, or None)."""
    wide = text_encoding(raw)
    if wide:
        codec, name = wide
        text = raw.decode(codec, "replace")  # an odd trailing byte (a cut file) becomes one U+FFFD
        return text.lstrip("\ufeff"), name
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return raw.decode("latin-1"), "latin-1"


def read_text(path: Path, limit: int = MAX_CAPTION_BYTES) -> tuple[str, str | None, bool]:
    """Read a small text file. Returns (text, fallback encoding or None, truncated?). OSError propagates."""
    with open(path, "rb") as f:
        raw = f.read(limit + 1)
    truncated = len(raw) > limit
    text, enc = decode_text(raw[:limit])
    return text, enc, truncated


def normalize_caption(text: str) -> str:
    """One line, single spaces: newlines inside caption files are layout, not meaning."""
    return " ".join(text.split())


def apply_trigger(prompt: str, trigger: str, placeholder: str) -> str:
    """Put the trigger token where the placeholder stands; without a trigger the placeholder goes."""
    if placeholder and placeholder in prompt:
        if trigger:
            return prompt.replace(placeholder, trigger)
        return normalize_caption(prompt.replace(placeholder, "")).strip(" ,")
    return prompt


def read_negative_prompts(path: Path) -> tuple[list[str], str | None]:
    """The lines of a negative-prompts file, without blanks and '#' comments."""
    text, enc, _ = read_text(path)
    lines = [normalize_caption(line) for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("#")], enc


# ----------------------------------------------------------------- per-step caption options
def _check_probability(value: float, name: str) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError([Problem(name, value, "0.0 – 1.0", "use e.g. 0.05 for a caption left out every 20th step")])
    return float(value)


def _uniform(rng: Rng) -> float:
    if isinstance(rng, random.Random):
        return rng.random()
    import torch

    return float(torch.rand((), generator=rng))


def _permutation(n: int, rng: Rng) -> list[int]:
    if isinstance(rng, random.Random):
        order = list(range(n))
        rng.shuffle(order)
        return order
    import torch

    return torch.randperm(n, generator=rng).tolist()


def split_tags(caption: str) -> list[str]:
    return [t.strip() for t in caption.split(",") if t.strip()]


def shuffle_tags(caption: str, keep: int, rng: Rng) -> str:
    """Shuffle comma-separated tags, keeping the first `keep` in place (the trigger token usually leads).

    A caption without commas comes back unchanged: shuffling a sentence's words would teach nonsense.
    """
    if keep < 0:
        raise ConfigError([Problem("keep_tags", keep, ">= 0", "use 1 to keep the leading trigger token in place")])
    tags = split_tags(caption)
    if len(tags) - keep < 2:
        return caption
    head, tail = tags[:keep], tags[keep:]
    return ", ".join(head + [tail[i] for i in _permutation(len(tail), rng)])


def apply_caption_dropout(caption: str, probability: float, rng: Rng) -> str:
    """With `probability`, train this step on an empty caption (the model also learns the look without
    its words, which makes the LoRA follow prompts that do not mention it). 0 never, 1 always."""
    p = _check_probability(probability, "caption_dropout")
    if p == 0.0:
        return caption
    return "" if _uniform(rng) < p else caption


def augment_caption(caption: str, rng: Rng, *, dropout: float = 0.0, shuffle: bool = False,
                    keep_tags: int = 1) -> str:
    """Both options in the order they are meant to apply: drop first (an empty caption needs no shuffle)."""
    caption = apply_caption_dropout(caption, dropout, rng)
    if shuffle and caption:
        caption = shuffle_tags(caption, keep_tags, rng)
    return caption
