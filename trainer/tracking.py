"""Experiment logging: loss, learning rate and preview images to TensorBoard and, when asked, W&B.

Trackers are plain objects behind a small protocol, so the loop only calls `on_step` / `on_images`
and never knows which backends run. TensorBoard is always available (our own event-file writer,
`tfevents.py`); Weights & Biases only when the user lists it in `report_to` *and* the `wandb`
package is installed. A missing package is a config error raised before the model loads, so a
run never trains for an hour and then fails to report.
"""
from __future__ import annotations

import contextlib

import importlib.util
import io
import logging
import math
from pathlib import Path
from typing import Any, Iterable, Protocol, runtime_checkable

from .config import REPORTERS
from .errors import ConfigError, ExportError, Problem
from .tfevents import EventFileWriter

log = logging.getLogger("lora_studio.tracking")

WANDB_FIX = "pip install wandb, or remove 'wandb' from report_to"
_COLORSPACE = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}  # TensorBoard's Summary.Image codes


@runtime_checkable
class Tracker(Protocol):
    def on_step(self, info: Any) -> None:
        """After each optimizer step. `info` has .step, .loss, .lr and optionally .extra (name -> scalar)."""

    def on_images(self, step: int, tag: str, images: list[Any]) -> None:
        """PIL images rendered at `step` (previews, bias-check grid). Logged as `<tag>/<index>`."""

    def close(self) -> None:
        """Finish writing. Idempotent."""


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


def encode_png(image: Any) -> tuple[bytes, int, int, int]:
    """PIL image → (PNG bytes, height, width, colorspace code)."""
    if image.mode not in _COLORSPACE:
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue(), image.height, image.width, _COLORSPACE[image.mode]


class TensorBoardTracker:
    """Writes one event file under `log_dir`; `tensorboard --logdir <its parent>` compares runs."""

    def __init__(self, log_dir: str | Path):
        self.writer = EventFileWriter(log_dir)
        self.path = self.writer.path

    def on_step(self, info: Any) -> None:
        self.writer.add_scalars(step_scalars(info), int(info.step))

    def on_images(self, step: int, tag: str, images: list[Any]) -> None:
        for i, image in enumerate(images):
            png, h, w, cs = encode_png(image)
            self.writer.add_image(f"{tag}/{i}", png, h, w, cs, int(step))

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A W&B run. Offline or disabled mode comes from the user's WANDB_MODE; we never force it online."""

    def __init__(self, project: str, run_name: str, config_dict: dict[str, Any], dir: str | Path):
        import wandb

        self._wandb = wandb
        Path(dir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=project, name=run_name, config=config_dict, dir=str(dir))
        self._closed = False

    def on_step(self, info: Any) -> None:
        self.run.log(step_scalars(info), step=int(info.step))

    def on_images(self, step: int, tag: str, images: list[Any]) -> None:
        # W&B needs monotonic steps: images of step N come after on_step(N), which is the same step.
        self.run.log({f"{tag}/{i}": self._wandb.Image(im) for i, im in enumerate(images)}, step=int(step))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.run.finish()


def wandb_available() -> bool:
    return importlib.util.find_spec("wandb") is not None


def reporter_problems(report_to: Iterable[str]) -> list[Problem]:
    """What is wrong with `report_to` on this machine. Cheap; safe to merge into config validation."""
    names = list(report_to)
    problems = [Problem("report_to", n, "one of " + ", ".join(REPORTERS), 'use ["tensorboard"] or [] for none')
                for n in names if n not in REPORTERS]
    if "wandb" in names and not wandb_available():
        problems.append(Problem("report_to", names, "'wandb' only when the wandb package is installed", WANDB_FIX))
    return problems


def make_trackers(report_to: list[str], log_dir: Path, run_name: str, config: dict[str, Any],
                  project: str = "lora-studio") -> list[Tracker]:
    """The trackers `report_to` asks for. Raises ConfigError before creating any file if one is unavailable."""
    problems = reporter_problems(report_to)
    if problems:
        raise ConfigError(problems)
    log_dir = Path(log_dir).expanduser()
    existed = log_dir.exists()
    trackers: list[Tracker] = []
    try:
        for name in dict.fromkeys(report_to):  # each once, in the order given
            if name == "tensorboard":
                trackers.append(TensorBoardTracker(log_dir))
            elif name == "wandb":
                trackers.append(WandbTracker(project, run_name, config, log_dir))
    except BaseException as e:
        close_all(trackers)  # a half-made set must not leave a W&B run or an open file behind
        for t in trackers:
            if isinstance(t, TensorBoardTracker):
                Path(t.path).unlink(missing_ok=True)
        if not existed:
            with contextlib.suppress(OSError):
                log_dir.rmdir()  # only if empty
        if isinstance(e, OSError):
            raise ExportError(f"Could not start experiment logging in {log_dir}: {e.strerror or e}. Nothing was "
                              "trained yet. Fix: free disk space, or set report_to to [] to train without "
                              "TensorBoard.") from None
        raise
    return trackers


def close_all(trackers: Iterable[Tracker]) -> None:
    for t in trackers:
        try:
            t.close()
        except Exception as e:  # closing one must not keep the others open
            log.warning("closing %s failed: %s", type(t).__name__, e)


class TrackerGroup:
    """Fans calls out to several trackers. A tracker that fails (disk full, W&B gone) is dropped with a
    warning: losing a curve must never cost the LoRA that hours of training are producing."""

    def __init__(self, trackers: Iterable[Tracker]):
        self.trackers = list(trackers)

    def _each(self, what: str, call) -> None:
        for t in list(self.trackers):
            try:
                call(t)
            except Exception as e:
                log.warning("%s.%s failed (%s: %s); logging to it stops, training goes on",
                            type(t).__name__, what, type(e).__name__, e)
                self.trackers.remove(t)
                close_all([t])

    def on_step(self, info: Any) -> None:
        self._each("on_step", lambda t: t.on_step(info))

    def on_images(self, step: int, tag: str, images: list[Any]) -> None:
        self._each("on_images", lambda t: t.on_images(step, tag, images))

    def close(self) -> None:
        close_all(self.trackers)
        self.trackers = []

    def __bool__(self) -> bool:
        return bool(self.trackers)
