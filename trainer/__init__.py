"""LoRA Studio trainer: a library with no ComfyUI import.

diffusers + peft + accelerate do the modelling; this package adds offline model loading,
dataset checks, cached training, kohya-format export and job records. Imports are relative
so the package works both as top-level `trainer` (CLI, tests) and inside the ComfyUI pack.
"""
import re
from pathlib import Path

from .config import TrainConfig
from .errors import (ConfigError, DatasetError, ExportError, LoraStudioError, ModelLoadError, Problem,
                     TrainingCancelled, TrainingFailed)
from .presets import PRESETS, apply_preset, get_preset

__all__ = [
    "TrainConfig", "PRESETS", "apply_preset", "get_preset", "ConfigError", "DatasetError", "ExportError",
    "LoraStudioError", "ModelLoadError", "Problem", "TrainingCancelled", "TrainingFailed",
]


def _version() -> str:
    # One source: pyproject.toml's [project] version, the one the Comfy Registry publishes.
    try:
        text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:  # the trainer copied without the pack around it
        return "0+unknown"
    m = re.search(r'(?m)^version\s*=\s*"([^"]+)"', text)
    return m.group(1) if m else "0+unknown"


__version__ = _version()
