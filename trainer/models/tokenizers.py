"""CLIP tokenizers without a network: the files already on the machine, the pack's own, or a tiny one.

Single-file checkpoints carry no tokenizer. A diffusers folder has its own `tokenizer/`, ComfyUI
ships the SD CLIP BPE files in `comfy/sd1_tokenizer/` (vocab.json, merges.txt); both are preferred
when present. Otherwise the pack's own copy of OpenAI's BPE vocabulary (`clip_tokenizer/`, MIT, see
its LICENSE) is turned into the same vocab.json / merges.txt pair: SD 1.x, SD 2.x (OpenCLIP) and
SDXL all use this one vocabulary.
SD 1.x pads with the end token; SD 2.x and SDXL's second encoder pad with "!" (id 0), as their
original OpenCLIP tokenizers and ComfyUI do — padding changes the embeddings, so it must match.
"""
from __future__ import annotations

import functools
import gzip
import json
import os
import tempfile
from pathlib import Path

from ..errors import ModelLoadError

TOKENIZER_FILES = ("vocab.json", "merges.txt")
PACK_TOKENIZER_DIR = Path(__file__).parent / "clip_tokenizer"
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
# CLIP's simple_tokenizer keeps the first 49152 - 256 - 2 merges: 512 byte symbols + merges + 2 specials = 49408.
N_MERGES = 49152 - 256 - 2


def _has_files(d: Path) -> bool:
    return all((d / f).is_file() for f in TOKENIZER_FILES) or (d / BPE_FILE).is_file()


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
    dirs.append(PACK_TOKENIZER_DIR)  # last: a ComfyUI's or a model folder's own files win
    return dirs


def find_tokenizer_dir(explicit: str = "", near: Path | None = None) -> Path:
    tried = candidate_dirs(explicit, near)
    for d in tried:
        if _has_files(d):
            return d
    if explicit:
        raise ModelLoadError(f"tokenizer_dir '{explicit}' has no vocab.json + merges.txt. Fix: point it at a folder "
                             "with the CLIP tokenizer files (ComfyUI ships them in comfy/sd1_tokenizer/).")
    raise ModelLoadError("No CLIP tokenizer files (vocab.json, merges.txt) found on this machine, and the pack's own "
                         f"copy ({PACK_TOKENIZER_DIR / BPE_FILE}) is missing; a single-file checkpoint carries none and "
                         "nothing is downloaded. Fix: reinstall LoRA Studio, or set tokenizer_dir (or the environment "
                         "variable COMFYUI_PATH) to ComfyUI, whose comfy/sd1_tokenizer/ has them. "
                         f"Looked in: {', '.join(str(d) for d in tried)}")


def load_clip_tokenizer(directory: Path, pad_token: str):
    if not all((directory / f).is_file() for f in TOKENIZER_FILES) and (directory / BPE_FILE).is_file():
        with tempfile.TemporaryDirectory(prefix="lora-studio-tokenizer-") as tmp:
            return _from_pretrained(bpe_to_tokenizer_files(directory / BPE_FILE, Path(tmp)), pad_token)
    return _from_pretrained(directory, pad_token)


def _from_pretrained(directory: Path, pad_token: str):
    from transformers import CLIPTokenizer

    # from_pretrained on a local folder works across transformers 4.x and 5.x (their constructors differ);
    # the tokenizer keeps its vocabulary in memory, so a temporary folder may go afterwards.
    tok = CLIPTokenizer.from_pretrained(str(directory), pad_token=pad_token, local_files_only=True)
    tok.model_max_length = 77
    return tok


def bpe_to_tokenizer_files(bpe_gz: Path, directory: Path) -> Path:
    """CLIP's BPE merges list → transformers' vocab.json + merges.txt (the files of openai/clip-vit-large-patch14)."""
    vocab_json, merges_txt = _derive(bpe_gz.resolve())
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(vocab_json, encoding="utf-8")
    (directory / "merges.txt").write_text(merges_txt, encoding="utf-8")
    return directory


@functools.lru_cache(maxsize=2)  # SDXL loads two tokenizers from the same vocabulary
def _derive(bpe_gz: Path) -> tuple[str, str]:
    """As OpenAI's simple_tokenizer builds its vocabulary: the 256 byte symbols, the same with the
    end-of-word mark, one token per merge, then the start and end tokens."""
    lines = gzip.decompress(bpe_gz.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1:N_MERGES + 1]  # line 0 is the file's version header
    syms = _byte_symbols()
    vocab = syms + [s + "</w>" for s in syms] + ["".join(m.split()) for m in merges] + ["<|startoftext|>",
                                                                                         "<|endoftext|>"]
    return (json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False),
            "#version: 0.2\n" + "\n".join(merges) + "\n")


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
