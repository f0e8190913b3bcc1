"""LoRA Studio — train LoRA adapters for SD 1.5 / 2.x / SDXL inside ComfyUI.

Registration goes through ComfyUI's V3 entry point (`comfy_entrypoint`) and happens only where
ComfyUI's `comfy_api` is importable; elsewhere this package imports without side effects and
registers nothing (`trainer/` is usable on its own: `python -m trainer`). Inside ComfyUI an error
while importing the nodes is not caught here: ComfyUI reports it as IMPORT FAILED with its traceback.
"""
import importlib.util

WEB_DIRECTORY = "./web"
__all__ = ["WEB_DIRECTORY"]

if importlib.util.find_spec("comfy_api") is not None and importlib.util.find_spec("folder_paths") is not None:
    from .nodes import comfy_entrypoint  # noqa: F401  (ComfyUI looks it up on this module)

    __all__.append("comfy_entrypoint")
