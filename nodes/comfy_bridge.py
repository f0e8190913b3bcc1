"""Everything the nodes need from ComfyUI, in one place.

The node schemas use ComfyUI's V3 API (`comfy_api.latest.io`), imported here once. The runtime parts
(`comfy`, `folder_paths`, `server`) are imported inside functions, so a helper that needs no server
(paths, names) still works when only `comfy_api` is importable, as in the node unit tests.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path

from comfy_api.latest import io

log = logging.getLogger("lora_studio.nodes")

DATASET_TYPE = "LORA_STUDIO_DATASET"
CONFIG_TYPE = "LORA_STUDIO_CONFIG"
LORA_TYPE = "LORA_STUDIO_LORA"
CATEGORY = "LoRA Studio"
LOSS_EVENT = "lora_studio.loss"
# Our own socket types: only our nodes connect to them (a dataset, a config, a trained LoRA with its record).
Dataset = io.Custom(DATASET_TYPE)
Config = io.Custom(CONFIG_TYPE)
Lora = io.Custom(LORA_TYPE)


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


def prompt_server():
    try:
        from server import PromptServer

        return PromptServer.instance
    except (ImportError, AttributeError):
        return None


# --------------------------------------------------------------------------- who queued what (a shared server)
# ComfyUI keeps no user with a queued prompt; nodes/routes.py's middleware notes the user of every accepted
# POST /prompt here (its `comfy-user` header in --multi-user mode), so Train LoRA can put it into the record.
PROMPT_OWNERS: OrderedDict[str, dict] = OrderedDict()
MAX_REMEMBERED_PROMPTS = 10_000
# The running jobs' progress for the job table: {prompt_id: {step, total, loss, eta_s, losses, node, ...}}
LIVE: dict[str, dict] = {}


def remember_prompt(prompt_id: str, user: str) -> None:
    PROMPT_OWNERS[prompt_id] = {"user": user, "created": datetime.now(timezone.utc).isoformat()}
    while len(PROMPT_OWNERS) > MAX_REMEMBERED_PROMPTS:
        PROMPT_OWNERS.popitem(last=False)


def prompt_owner(prompt_id: str | None) -> dict:
    return PROMPT_OWNERS.get(str(prompt_id), {}) if prompt_id else {}


def current_run(node_id: str | None) -> dict:
    """This execution's prompt id, the browser session that queued it and its ComfyUI user."""
    prompt_id = None
    try:
        from comfy_execution.utils import get_executing_context

        ctx = get_executing_context()
        prompt_id = ctx.prompt_id if ctx is not None else None
    except ImportError:
        pass
    srv = prompt_server()
    client_id = getattr(srv, "client_id", None) if srv is not None else None
    owner = prompt_owner(prompt_id)
    return {"prompt_id": prompt_id, "client_id": client_id, "node_id": node_id,
            "user": owner.get("user") or "default"}


class NodeReporter:
    """Progress bar, text and loss points for one node, sent over ComfyUI's websocket to the session that
    queued the prompt only (`sid`): on a shared server nobody else sees this run's curve or text."""

    def __init__(self, node_id: str | None, total: int, run: dict | None = None):
        self.node_id, self.total = node_id, total
        self.run = run or {}
        self.prompt_id, self.sid = self.run.get("prompt_id"), self.run.get("client_id")
        self.pbar = None
        self.live = None
        if self.prompt_id:
            self.live = LIVE.setdefault(self.prompt_id, {"node": node_id, "total": total, "losses": [],
                                                         "user": self.run.get("user")})
        try:
            import comfy.utils

            self.pbar = comfy.utils.ProgressBar(total, node_id=node_id)
        except (ImportError, TypeError):
            pass

    def _server(self):
        return prompt_server()

    def text(self, message: str) -> None:
        srv = self._server()
        if srv is not None and self.node_id is not None and self.sid is not None:
            try:
                srv.send_progress_text(message, self.node_id, self.sid)
            except Exception:  # progress display must never break a run
                log.debug("progress text failed", exc_info=True)

    def step(self, info) -> None:
        if self.live is not None:
            self.live.update(step=info.step, total=info.total, loss=info.loss, eta_s=info.eta_s)
            self.live["losses"].append(info.loss)
        srv = self._server()
        if srv is not None and self.sid is not None:  # like ComfyUI's own events: none without a session
            srv.send_sync(LOSS_EVENT, {"node": self.node_id, "prompt_id": self.prompt_id, "step": info.step,
                                       "total": info.total, "loss": info.loss, "lr": info.lr, "eta_s": info.eta_s},
                          self.sid)
        self.text(f"step {info.step}/{info.total} · loss {info.loss:.4f} · ETA {_eta(info.eta_s)}")
        if self.pbar is not None:
            self.pbar.update_absolute(info.step, info.total)  # also raises if the user pressed Cancel

    def close(self) -> None:
        if self.prompt_id:
            LIVE.pop(self.prompt_id, None)

    def preview(self, step: int, images) -> None:
        """Every preview prompt's picture: several are shown as one grid (the node shows one image)."""
        if self.pbar is not None and images:
            image = images[0]
            if len(images) > 1:
                from ..trainer.preview import grid

                image = grid(images)
            self.pbar.update_absolute(step, self.total, ("PNG", image, None))


def _eta(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def allowed_roots() -> list[Path]:
    """ComfyUI's input folder; trainer.data.confine adds what the operator lists in LORA_STUDIO_ALLOWED_ROOTS."""
    return [input_dir()]


def read_roots() -> list[Path]:
    """Where class pictures, tokenizer files and model configs named in a config may come from: the allowed
    roots and ComfyUI's models folder (trainer.data.safety.confine_config_paths)."""
    fp = folder_paths()
    return allowed_roots() + ([Path(fp.models_dir)] if fp else [])


def confined(data: dict) -> dict:
    """A config dict with its user-set folders confined; `jobs_dir` must already be the server's own. Datasets may
    also lie in output/lora_studio/datasets, where Dataset from Images saves the pictures it gets from a graph."""
    from ..trainer.data.safety import confine_config_paths

    fp = folder_paths()
    models = [Path(p) for p in fp.get_folder_paths("checkpoints")] if fp else None  # without ComfyUI: not checked
    return confine_config_paths(data, read_roots(), Path(data.get("jobs_dir") or studio_dir("jobs")) / "checkpoints",
                                dataset_roots=allowed_roots() + [studio_dir("datasets")], model_roots=models)
