"""Tiny random SD-shaped models, built from the configs in `configs/tiny-*` — no download.

This is the clearly labelled *demo model* of the README (it learns, but its pictures are noise)
and the test suites' base model. Weights are seeded, so the same call builds the same folder.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from .load import CONFIG_ROOT
from .tokenizers import write_char_tokenizer

log = logging.getLogger("lora_studio.models")

TINY_FAMILIES = {"sd15": "tiny-sd15", "sd2": "tiny-sd2", "sdxl": "tiny-sdxl"}


def build_tiny_model(out_dir: str | Path, family: str = "sd15", seed: int = 0, config_root: Path | None = None) -> Path:
    """Write a diffusers folder with random weights for `family` (sd15 / sd2 / sdxl). Returns the folder.

    Safe when several runs start at once from the same folder: one builds (under a file lock) into its own
    hidden `.<name>.<pid>-….partial` folder and renames it into place; the others wait and use it. A build
    that fails (disk full) removes its partial folder; leftovers of killed builds go at the next build.
    """
    from filelock import FileLock, Timeout

    from ..atomic import ensure_folder
    from ..errors import ModelLoadError
    from ..runstate import clean_partials

    out = Path(out_dir)
    if (out / "model_index.json").is_file():
        return out
    ensure_folder(out.parent)
    try:
        with FileLock(str(out.parent / f".{out.name}.lock"), timeout=600):
            if (out / "model_index.json").is_file():  # another process built it while we waited
                return out
            clean_partials(out.parent)
            _build(out, family, seed, config_root)
    except Timeout:
        raise ModelLoadError(f"Another process has been building the demo model in {out.parent} for 10 minutes. "
                             "Fix: wait for it, or remove the folder and its .lock file if no run is going.") from None
    except Exception as e:  # OSError, or the library's own wrapper of it (safetensors: "No space left on device")
        why = getattr(e, "strerror", None) or str(e)[:200]
        raise ModelLoadError(f"Could not build the demo model in {out}: {why}. Nothing half-built was "
                             "left. Fix: free disk space, or choose another --jobs-dir.") from None
    log.info("built tiny %s demo model in %s", family, out)
    return out


def _build(out: Path, family: str, seed: int, config_root: Path | None) -> None:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from ..atomic import atomic_folder

    src = config_root or CONFIG_ROOT / TINY_FAMILIES[family]
    # overwrite: an incomplete folder under the final name (from before partial folders) is replaced
    with atomic_folder(out, overwrite=True) as tmp:
        cfg = lambda sub: json.loads((src / sub / "config.json").read_text())  # noqa: E731
        torch.manual_seed(seed)
        UNet2DConditionModel.from_config(cfg("unet")).save_pretrained(tmp / "unet")
        AutoencoderKL.from_config(cfg("vae")).save_pretrained(tmp / "vae")
        CLIPTextModel(CLIPTextConfig(**cfg("text_encoder"))).save_pretrained(tmp / "text_encoder")
        write_char_tokenizer(tmp / "tokenizer")
        if (src / "text_encoder_2").is_dir():
            CLIPTextModelWithProjection(CLIPTextConfig(**cfg("text_encoder_2"))).save_pretrained(tmp / "text_encoder_2")
            write_char_tokenizer(tmp / "tokenizer_2")
        DDPMScheduler.from_config(json.loads((src / "scheduler" / "scheduler_config.json").read_text())) \
            .save_pretrained(tmp / "scheduler")
        index = {"_class_name": "StableDiffusionXLPipeline" if family == "sdxl" else "StableDiffusionPipeline",
                 "lora_studio_note": "TINY RANDOM DEMO MODEL - not a real Stable Diffusion; its images are noise"}
        (tmp / "model_index.json").write_text(json.dumps(index, indent=1))
