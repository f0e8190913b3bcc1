"""LoRA Studio trainer: a library with no ComfyUI import.

diffusers + peft + accelerate do the modelling; this package adds offline model loading,
dataset checks, cached training, kohya-format export and job records. Imports are relative
so the package works both as top-level `trainer` (CLI, tests) and inside the ComfyUI pack.
"""
from .config import TrainConfig
from .errors import (ConfigError, DatasetError, ExportError, LoraStudioError, ModelLoadError, Problem,
                     TrainingCancelled, TrainingFailed)
from .presets import PRESETS, apply_preset, get_preset

__all__ = [
    "TrainConfig", "PRESETS", "apply_preset", "get_preset", "ConfigError", "DatasetError", "ExportError",
    "LoraStudioError", "ModelLoadError", "Problem", "TrainingCancelled", "TrainingFailed",
]
__version__ = "0.1.0"
