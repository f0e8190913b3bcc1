"""Base models: offline loading of SD 1.x / 2.x / SDXL, detection, tokenizers, tiny demo models."""
from .detect import FAMILY_LABEL, SUPPORTED, detect_family
from .load import BaseModel, load_base_model, read_state_dict
from .tiny import build_tiny_model

__all__ = ["BaseModel", "load_base_model", "read_state_dict", "detect_family", "build_tiny_model", "FAMILY_LABEL",
           "SUPPORTED"]
