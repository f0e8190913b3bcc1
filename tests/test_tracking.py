"""Experiment logging: our event files read back with TensorBoard's own reader; W&B stays optional."""
from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from PIL import Image

from trainer.errors import ConfigError
from trainer.tfevents import EventFileWriter, crc32c, masked_crc32c
from trainer.tracking import TensorBoardTracker, TrackerGroup, make_trackers, reporter_problems

STEPS = 12


@dataclass
class Info:  # StepInfo's shape, with the `extra` scalars the lead adds to it
    step: int
    loss: float
    lr: float
    extra: dict = field(default_factory=dict)


def cosine_lrs(steps: int = STEPS, warmup: int = 2) -> list[float]:
    from diffusers.optimization import get_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = get_scheduler("cosine", opt, num_warmup_steps=warmup, num_training_steps=steps)
    lrs = []
    for _ in range(steps):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return lrs


def accumulator(log_dir: Path):
    pytest.importorskip("tensorboard", reason="reading event files back needs tensorboard (requirements-test.txt)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})  # 0 = keep everything
    acc.Reload()
    return acc


def log_run(log_dir: Path) -> tuple[list[float], list[float], Path]:
    lrs = cosine_lrs()
    losses = [1.0 / (s + 1) for s in range(STEPS)]
    tracker = TensorBoardTracker(log_dir)
    for s in range(STEPS):
        tracker.on_step(Info(s + 1, losses[s], lrs[s], {"instance_loss": losses[s] * 0.6, "prior_loss": 0.25,
                                                         "note": "not a number"}))
    tracker.on_images(STEPS, "preview", [Image.new("RGB", (48, 32), (200, 30, 10)), Image.new("L", (16, 16), 90)])
    tracker.close()
    return losses, lrs, tracker.path


def test_crc32c_known_vector():
    assert crc32c(b"123456789") == 0xE3069283  # the check value of CRC-32C (RFC 3720)
    assert masked_crc32c(b"") != crc32c(b"")


def test_scalars_and_images_read_back_with_tensorboard(tmp_path):
    losses, lrs, path = log_run(tmp_path / "run")
    assert path.name.startswith("events.out.tfevents.") and path.name.endswith(".0")
    acc = accumulator(tmp_path / "run")
    tags = acc.Tags()
    assert {"train/loss", "train/lr", "train/instance_loss", "train/prior_loss"} <= set(tags["scalars"])
    assert "train/note" not in tags["scalars"]
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, STEPS + 1))  # one per step, none twice
    assert [e.value for e in loss] == pytest.approx(losses, rel=1e-6)  # stored as float32
    lr = acc.Scalars("train/lr")
    assert [e.value for e in lr] == pytest.approx(lrs, rel=1e-6, abs=1e-12)
    assert lr[0].value == 0.0 and max(e.value for e in lr) == pytest.approx(1e-3)  # warmup, then cosine decay
    assert [e.value for e in acc.Scalars("train/instance_loss")] == pytest.approx([x * 0.6 for x in losses], rel=1e-6)
    assert set(tags["images"]) == {"preview/0", "preview/1"}
    img = acc.Images("preview/0")[0]
    assert (img.step, img.width, img.height) == (STEPS, 48, 32)
    import io

    decoded = Image.open(io.BytesIO(img.encoded_image_string))
    assert decoded.format == "PNG" and decoded.getpixel((5, 5)) == (200, 30, 10)


def test_truncated_last_record_keeps_earlier_ones(tmp_path):
    tracker = TensorBoardTracker(tmp_path)
    for s in range(1, 6):
        tracker.on_step(Info(s, 1.0 / s, 1e-4))
    before = tracker.path.read_bytes()  # flushed per record: complete while the writer is still open
    tracker.on_step(Info(6, 0.1, 1e-4))
    after = tracker.path.read_bytes()
    assert len(after) > len(before)
    # the process dies half-way through writing the 6th record
    tracker.path.write_bytes(after[:len(before) + (len(after) - len(before)) // 2])
    assert [e.step for e in accumulator(tmp_path).Scalars("train/loss")] == [1, 2, 3, 4, 5]
    tracker.close()


def test_two_writers_in_one_second_never_share_a_file(tmp_path):
    a, b = EventFileWriter(tmp_path), EventFileWriter(tmp_path)
    assert a.path != b.path
    a.close(), b.close()
    a.close()  # idempotent


def test_wandb_missing_is_a_clear_config_error_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as on a machine without it (it is not installed here)
    with pytest.raises(ConfigError) as e:
        make_trackers(["tensorboard", "wandb"], tmp_path / "logs", "run", {})
    msg = str(e.value)
    assert "report_to" in msg and "pip install wandb, or remove 'wandb' from report_to" in msg
    assert not (tmp_path / "logs").exists()  # checked before the TensorBoard file was made
    assert reporter_problems(["tensorboard"]) == []


def test_wandb_tracker_with_a_stand_in_module(tmp_path, monkeypatch):
    """The W&B path without the package or the network: a stand-in records what would be sent."""
    calls: list = []
    run = types.SimpleNamespace(log=lambda d, step: calls.append(("log", step, d)),
                                finish=lambda: calls.append(("finish",)))
    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls.append(("init", kw)) or run
    fake.Image = lambda im: ("image", im.size)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr("trainer.tracking.wandb_available", lambda: True)
    trackers = make_trackers(["wandb", "tensorboard", "wandb"], tmp_path / "logs", "my-run", {"rank": 8})
    assert [type(t).__name__ for t in trackers] == ["WandbTracker", "TensorBoardTracker"]
    group = TrackerGroup(trackers)
    group.on_step(Info(1, 0.5, 1e-4, {"prior_loss": 0.1}))
    group.on_images(1, "preview", [Image.new("RGB", (8, 8))])
    group.close()
    assert calls[0] == ("init", {"project": "lora-studio", "name": "my-run", "config": {"rank": 8},
                                 "dir": str(tmp_path / "logs")})
    assert calls[1] == ("log", 1, {"train/loss": 0.5, "train/lr": 1e-4, "train/prior_loss": 0.1})
    assert calls[2] == ("log", 1, {"preview/0": ("image", (8, 8))})
    assert calls[3] == ("finish",)


def test_a_failing_tracker_is_dropped_and_the_others_go_on(tmp_path):
    class Broken:
        closed = False

        def on_step(self, info):
            raise OSError("disk full")

        def on_images(self, step, tag, images):
            raise AssertionError("dropped trackers are not called again")

        def close(self):
            Broken.closed = True

    tb = TensorBoardTracker(tmp_path)
    group = TrackerGroup([Broken(), tb])
    group.on_step(Info(1, 0.5, 1e-4))
    group.on_step(Info(2, 0.4, 1e-4))
    group.on_images(2, "preview", [Image.new("RGB", (8, 8))])
    group.close()
    assert Broken.closed and group.trackers == []
    assert [e.step for e in accumulator(tmp_path).Scalars("train/loss")] == [1, 2]
