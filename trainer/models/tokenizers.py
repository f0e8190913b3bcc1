"""CLIP tokenizers without a network: find the files already on the machine, or write a tiny one.

Single-file checkpoints carry no tokenizer. ComfyUI ships the SD CLIP BPE files in
`comfy/sd1_tokenizer/` (vocab.json, merges.txt); a diffusers folder has its own `tokenizer/`.
SD 1.x pads with the end token; SD 2.x and SDXL's second encoder pad with "!" (id 0), as their
original OpenCLIP tokenizers and ComfyUI do — padding changes the embeddings, so it must match.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ModelLoadError

TOKENIZER_FILES = ("vocab.json", "merges.txt")


def _has_files(d: Path) -> bool:
    return all((d / f).is_file() for f in TOKENIZER_FILES)


def candidate_dirs(explicit: str = "", near: Path | None = None) -> list[Path]:
    dirs: list[Path] = []
    if explicit:
        dirs.append(Path(explicit).expanduser())
    if near is not None:
        dirs += [near / "tokenizer", near]
    comfy = os.environ.get("COMFYUI_PATH")
    if comfy:
        dirs.append(Path(comfy) / "comfy" / "sd1_tokenizer")
    # The pack normally lies in <ComfyUI>/custom_nodes/<pack>/trainer/models/this_file.
    here = Path(__file__).resolve()
    for up in here.parents[3:6]:
        dirs.append(up / "comfy" / "sd1_tokenizer")
    return dirs


def find_tokenizer_dir(explicit: str = "", near: Path | None = None) -> Path:
    tried = candidate_dirs(explicit, near)
    for d in tried:
        if _has_files(d):
            return d
    if explicit:
        raise ModelLoadError(f"tokenizer_dir '{explicit}' has no vocab.json + merges.txt. Fix: point it at a folder "
                             "with the CLIP tokenizer files (ComfyUI ships them in comfy/sd1_tokenizer/).")
    raise ModelLoadError("No CLIP tokenizer files (vocab.json, merges.txt) found on this machine; a single-file "
                         "checkpoint carries none and nothing is downloaded. Fix: set tokenizer_dir (or the "
                         "environment variable COMFYUI_PATH) to ComfyUI, whose comfy/sd1_tokenizer/ has them. "
                         f"Looked in: {', '.join(str(d) for d in tried)}")


def load_clip_tokenizer(directory: Path, pad_token: str):
    from transformers import CLIPTokenizer

    # from_pretrained on a local folder works across transformers 4.x and 5.x (their constructors differ).
    tok = CLIPTokenizer.from_pretrained(str(directory), pad_token=pad_token, local_files_only=True)
    tok.model_max_length = 77
    return tok


def write_char_tokenizer(directory: Path) -> Path:
    """A byte-level CLIP vocabulary with no merges (514 tokens): the tiny demo/test models' tokenizer.

    Ids 0–255 are the byte symbols, 256–511 the same with the end-of-word mark, 512 the start and
    513 the end token. "!" is id 0, as in the real vocabulary.
    """
    directory.mkdir(parents=True, exist_ok=True)
    syms = _byte_symbols()
    vocab = {s: i for i, s in enumerate(syms)}
    vocab.update({s + "</w>": i + len(syms) for i, s in enumerate(syms)})
    vocab["<|startoftext|>"] = 2 * len(syms)
    vocab["<|endoftext|>"] = 2 * len(syms) + 1
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return directory


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's printable stand-in for each byte, in CLIP's order (printable bytes first, so "!" is 0)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    rest = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(rest))]
