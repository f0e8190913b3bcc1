"""Experiment logging through accelerate's own trackers: loss, learning rate and preview images.

`report_to` names accelerate trackers. The Accelerator is built with `log_with=` those that are installed and
`project_dir=` the job's folder; `init_trackers` starts them once the run's inputs are known good (a bad
dataset or model leaves no event file); every optimizer step goes through `accelerator.log` and every preview
through the trackers' `log_images`; `end_training` closes them. What is glue here, and why:

- TensorBoard is an optional extra (`pip install tensorboard`, or the pack's `[tensorboard]` extra) and the
  default of `report_to`: asked for but not installed, the run says once how to get it and trains on
  (accelerate would drop it silently). W&B is never a default, so naming it without the package is a config
  error before anything loads.
- A tracker that fails (disk full, W&B gone) ends the logging with a warning: losing a curve must never cost
  the LoRA that hours of training are producing.

The job record keeps its own loss and learning-rate curves (the web UI and the nodes read those); these
trackers are for people who compare runs in TensorBoard or W&B.
"""
from __future__ import annotations

import logging
import math
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .errors import ExportError, Problem

log = logging.getLogger("lora_studio.tracking")

PROJECT = "lora-studio"  # init_trackers' project: W&B's project, and TensorBoard's folder inside the job folder
WANDB_FIX = "pip install wandb, or remove 'wandb' from report_to"
# The command names the Python that runs this (ComfyUI portable, a venv): `pip` on PATH may be another one's.
# A note, not a warning: report_to's default asks for TensorBoard, so a first run (the quick start's demo)
# would otherwise open with a warning about an optional extra.
TENSORBOARD_HINT = ("TensorBoard logs: not written, the tensorboard package is not installed (training is not "
                    "affected). To get them: "
                    f"{shlex.join([sys.executable, '-m', 'pip', 'install', 'tensorboard'])} (or the pack's extra "
                    "lora-studio[tensorboard]); report_to=[] turns this note off.")


def _available(name: str) -> bool:
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    return bool({"tensorboard": is_tensorboard_available, "wandb": is_wandb_available}[name]())


def reporter_problems(report_to: Iterable[str]) -> list[Problem]:
    """W&B named without the package: a config error (TensorBoard missing only costs its logs, see log_with)."""
    names = list(report_to)
    if "wandb" in names and not _available("wandb"):
        return [Problem("report_to", names, "'wandb' only when the wandb package is installed", WANDB_FIX)]
    return []


def log_with(report_to: Iterable[str], say: Callable[[str], None]) -> list[str]:
    """The trackers for `Accelerator(log_with=...)`: each asked for once, those not installed left out (said)."""
    out = []
    for name in dict.fromkeys(report_to):
        if _available(name):
            out.append(name)
        elif name == "tensorboard":
            say(TENSORBOARD_HINT)
    return out


def start(acc, job_dir: Path, job_id: str, config: dict[str, Any]) -> None:
    """`init_trackers` for this job. TensorBoard writes under `<job_dir>/lora-studio/`. A folder or file that
    cannot be made (disk full) stops the run here, before any training, and leaves nothing behind."""
    if not acc.log_with:
        return
    job_dir = Path(job_dir)
    existed = job_dir.exists()
    # The config goes to W&B only: TensorBoard's hparams take no lists, and the job record holds the config.
    kwargs = {"wandb": {"name": job_id, "config": config, "dir": str(job_dir)}}
    try:
        if "wandb" in [str(t) for t in acc.log_with]:
            job_dir.mkdir(parents=True, exist_ok=True)
        acc.init_trackers(PROJECT, init_kwargs=kwargs)
    except OSError as e:
        _drop(acc)
        if not existed:
            shutil.rmtree(job_dir, ignore_errors=True)  # this run's own new folder: nothing else is in it
        raise ExportError(f"Could not start experiment logging in {job_dir}: {e.strerror or e}. Nothing was trained "
                          "yet. Fix: free disk space, or set report_to to [] to train without TensorBoard.") from None


def step_scalars(info: Any) -> dict[str, float]:
    """`train/loss`, `train/lr` and `train/<key>` for each finite number in `info.extra`."""
    out = {"train/loss": float(info.loss), "train/lr": float(info.lr)}
    for key, value in (getattr(info, "extra", None) or {}).items():
        try:
            v = float(value)  # tensors and numpy scalars too
        except (TypeError, ValueError):
            continue  # a non-number in extra is someone's note, not a curve
        if math.isfinite(v):
            out[f"train/{key}"] = v
    return out


def log_step(acc, info: Any) -> None:
    _guarded(acc, "log", lambda: acc.log(step_scalars(info), step=int(info.step)))


def log_images(acc, step: int, tag: str, images: list[Any]) -> None:
    """PIL images (one size: a preview set) as one image series per tag, in each tracker that takes images."""
    batch = np.stack([np.asarray(im.convert("RGB")) for im in images])  # N, H, W, C
    kwargs = {"tensorboard": {"dataformats": "NHWC"}}

    def each() -> None:
        for tracker in acc.trackers:
            if hasattr(tracker, "log_images"):
                tracker.log_images({tag: batch}, step=int(step), **kwargs.get(tracker.name, {}))

    _guarded(acc, "log_images", each)


def end(acc) -> None:
    """`end_training` once the run is over: the trackers' files are closed. Never raises (it runs in `finally`)."""
    try:
        acc.end_training()
    except Exception as e:  # noqa: BLE001 - closing a log must not mask the run's own outcome
        log.warning("closing the experiment trackers failed: %s", e)
    acc.trackers = []


def _guarded(acc, what: str, call: Callable[[], None]) -> None:
    if not acc.trackers:
        return
    try:
        call()
    except Exception as e:  # noqa: BLE001 - see the module docstring
        log.warning("experiment logging failed in %s (%s: %s); it stops, training goes on",
                    what, type(e).__name__, e)
        _drop(acc)


def _drop(acc) -> None:
    """Close the trackers mid-run (not `end_training`: that also ends a multi-process run's process group)."""
    for tracker in acc.trackers:
        try:
            tracker.finish()
        except Exception as e:  # noqa: BLE001 - one that never started has nothing to close
            log.debug("closing %s failed: %s", type(tracker).__name__, e)
    acc.trackers = []
