"""Everything the nodes need from ComfyUI, in one place and imported lazily.

The node classes must stay importable without ComfyUI (CI checks the example workflows against
their INPUT_TYPES), so every `comfy` / `folder_paths` / `server` import happens inside a function.
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("lora_studio.nodes")

DATASET_TYPE = "LORA_STUDIO_DATASET"
CONFIG_TYPE = "LORA_STUDIO_CONFIG"
LORA_TYPE = "LORA_STUDIO_LORA"
CATEGORY = "LoRA Studio"
LOSS_EVENT = "lora_studio.loss"


def folder_paths():
    try:
        import folder_paths as fp

        return fp
    except ImportError:
        return None


def checkpoint_names() -> list[str]:
    fp = folder_paths()
    return fp.get_filename_list("checkpoints") if fp else []


def checkpoint_path(name: str) -> str:
    fp = folder_paths()
    if fp is None:
        return name
    path = fp.get_full_path("checkpoints", name)
    if path is None:
        from ..trainer import ModelLoadError

        raise ModelLoadError(f"Checkpoint '{name}' is not in models/checkpoints. Fix: pick one from the list "
                             "(press R in the graph editor to refresh it).")
    return path


def input_dir() -> Path:
    fp = folder_paths()
    return Path(fp.get_input_directory()) if fp else Path.cwd() / "input"


def studio_dir(*parts: str) -> Path:
    """`<ComfyUI output>/lora_studio/...`: job records, checkpoints and the latent cache."""
    fp = folder_paths()
    base = Path(fp.get_output_directory()) if fp else Path.cwd() / "output"
    return base.joinpath("lora_studio", *parts)


def loras_dir() -> Path:
    fp = folder_paths()
    if fp is None:
        return Path.cwd() / "models" / "loras"
    return Path(fp.get_folder_paths("loras")[0])


def refresh_lora_list() -> None:
    """Load LoRA lists files from a cache keyed by folder mtime; drop it so a new file shows at once."""
    fp = folder_paths()
    if fp is not None:
        fp.filename_list_cache.pop("loras", None)


def tokenizer_dir() -> str:
    """ComfyUI bundles the SD CLIP BPE files; single-file checkpoints carry none."""
    fp = folder_paths()
    if fp is None:
        return ""
    d = Path(fp.__file__).resolve().parent / "comfy" / "sd1_tokenizer"  # `comfy` is a namespace package
    return str(d) if (d / "vocab.json").is_file() else ""


def free_comfy_memory() -> None:
    """ComfyUI keeps its own models on the GPU; a first training run would otherwise run out of memory."""
    try:
        import comfy.model_management as mm

        mm.unload_all_models()
        mm.soft_empty_cache(True)
    except ImportError:
        pass


def interrupted() -> bool:
    try:
        import comfy.model_management as mm

        return mm.processing_interrupted()
    except ImportError:
        return False


def interrupt_exception() -> type[BaseException] | None:
    try:
        import comfy.model_management as mm

        return mm.InterruptProcessingException
    except ImportError:
        return None


class NodeReporter:
    """Progress bar, text and loss points for one node, sent over ComfyUI's websocket."""

    def __init__(self, node_id: str | None, total: int):
        self.node_id, self.total = node_id, total
        self.pbar = None
        try:
            import comfy.utils

            self.pbar = comfy.utils.ProgressBar(total, node_id=node_id)
        except (ImportError, TypeError):
            pass

    def _server(self):
        try:
            from server import PromptServer

            return PromptServer.instance
        except (ImportError, AttributeError):
            return None

    def text(self, message: str) -> None:
        srv = self._server()
        if srv is not None and self.node_id is not None:
            try:
                srv.send_progress_text(message, self.node_id)
            except Exception:  # progress display must never break a run
                log.debug("progress text failed", exc_info=True)

    def step(self, info) -> None:
        srv = self._server()
        if srv is not None:
            srv.send_sync(LOSS_EVENT, {"node": self.node_id, "step": info.step, "total": info.total,
                                       "loss": info.loss, "lr": info.lr, "eta_s": info.eta_s})
        self.text(f"step {info.step}/{info.total} · loss {info.loss:.4f} · ETA {_eta(info.eta_s)}")
        if self.pbar is not None:
            self.pbar.update_absolute(info.step, info.total)  # also raises if the user pressed Cancel

    def preview(self, step: int, image) -> None:
        if self.pbar is not None:
            self.pbar.update_absolute(step, self.total, ("PNG", image, None))


def _eta(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def allowed_roots() -> list[Path]:
    """ComfyUI's input folder; trainer.data.confine adds what the operator lists in LORA_STUDIO_ALLOWED_ROOTS."""
    return [input_dir()]
