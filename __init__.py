"""LoRA Studio — train LoRA adapters for SD 1.5 / 2.x / SDXL inside ComfyUI.

Guarded registration: outside ComfyUI this package imports without side effects and registers
no nodes; `trainer/` is usable on its own (`python -m trainer`).
"""
import importlib.util
import logging

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
WEB_DIRECTORY = "./web"

if importlib.util.find_spec("folder_paths") is not None and importlib.util.find_spec("comfy") is not None:
    try:
        from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: F811
        from .nodes.routes import register as _register_routes

        _register_routes()  # the LoRA Studio sidebar's /lora_studio/... routes on ComfyUI's server
    except Exception:  # a broken optional dependency must not take ComfyUI down with it
        logging.getLogger("lora_studio").exception("LoRA Studio nodes could not be loaded")

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
