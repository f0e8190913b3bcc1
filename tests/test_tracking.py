"""Experiment logging through accelerate's trackers: TensorBoard's event files read back with TensorBoard's own
reader; without tensorboard a run trains on and says once how to get it; W&B stays optional."""
from __future__ import annotations

import errno
import importlib.machinery
import io
import json
import logging
import os
import subprocess
import sys
import types

import pytest
import torch
from conftest import REPO, tiny_overrides, tree
from PIL import Image

from trainer import ConfigError, TrainConfig
from trainer.job import run_job
from trainer.tracking import PROJECT, TENSORBOARD_HINT, reporter_problems


def _run(tmp_path, base, data, **kw):
    kw.setdefault("preview_every", -1)
    kw.setdefault("max_train_steps", 2)
    return run_job(TrainConfig.from_dict(tiny_overrides(tmp_path, base, data, **kw)))


def _events(tmp_path, job_id: str):
    pytest.importorskip("tensorboard", reason="reading event files back needs tensorboard (requirements-test.txt)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = tmp_path / "jobs" / job_id / PROJECT
    assert list(folder.glob("events.out.tfevents.*")), f"no event file in {folder}"
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})  # 0 = keep everything
    acc.Reload()
    return acc


def _cosine(steps: int, warmup: int, lr: float) -> list[float]:
    from diffusers.optimization import get_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = get_scheduler("cosine", opt, num_warmup_steps=warmup, num_training_steps=steps)
    out = []
    for _ in range(steps):
        out.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return out


def test_tensorboard_events_hold_loss_per_step_the_lr_schedule_and_previews(tmp_path, tiny_sd15, sample_dataset):
    pytest.importorskip("tensorboard")
    res = _run(tmp_path, tiny_sd15, sample_dataset, max_train_steps=8, lr_scheduler="cosine", lr_warmup_steps=2,
               preview_every=4, preview_sampling_steps=2)
    acc = _events(tmp_path, res.record["id"])
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, 9))  # one per optimizer step, none twice
    # the job record keeps its own curves (the web UI and nodes read them); the event file holds the same numbers
    assert len(res.record["metrics"]["losses"]) == 8
    assert [e.value for e in loss] == pytest.approx(res.record["metrics"]["losses"], rel=1e-6)
    lr = [e.value for e in acc.Scalars("train/lr")]
    assert lr == pytest.approx(_cosine(8, 2, 1e-2), rel=1e-6, abs=1e-12)
    assert lr == pytest.approx(res.record["metrics"]["learning_rates"], rel=1e-6, abs=1e-12)
    images = acc.Images("preview")
    assert [im.step for im in images] == [4, 8]  # at preview_every and at the end
    decoded = Image.open(io.BytesIO(images[-1].encoded_image_string))
    assert decoded.format == "PNG" and decoded.size == (images[-1].width, images[-1].height)
    assert decoded.size[0] > 0 and decoded.getextrema() != ((0, 0), (0, 0), (0, 0))  # a picture, not a blank


def test_without_tensorboard_the_run_trains_on_and_says_how_to_get_it_once(tmp_path, tiny_sd15, sample_dataset):
    """A machine without tensorboard, simulated in a fresh process: every import of it fails there."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import sys\nsys.modules['tensorboard'] = None\n"
                                           "sys.modules['tensorboardX'] = None\n")
    job = tmp_path / "job.json"
    job.write_text(json.dumps(tiny_overrides(tmp_path, tiny_sd15, sample_dataset, max_train_steps=3,
                                             preview_every=-1, report_to=["tensorboard"])))
    path = [str(shim), str(REPO)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "trainer", "train", "--job", str(job)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    said = out.stdout + out.stderr
    assert out.returncode == 0, said[-3000:]
    assert "Traceback" not in said
    assert said.count("pip install tensorboard") == 1, said[-3000:]  # once, not per step
    assert TENSORBOARD_HINT in said
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "jobs").glob("*.json")]
    assert record["status"] == "finished" and len(record["metrics"]["losses"]) == 3
    assert (tmp_path / "loras" / "tiny.safetensors").is_file()
    assert not list((tmp_path / "jobs").rglob("events.out.tfevents*"))


def test_report_to_empty_logs_nothing_and_says_nothing(tmp_path, tiny_sd15, sample_dataset):
    messages = []
    from trainer.loop import Callbacks

    res = run_job(TrainConfig.from_dict(tiny_overrides(tmp_path, tiny_sd15, sample_dataset, max_train_steps=1,
                                                       preview_every=-1, report_to=[])),
                  Callbacks(on_message=messages.append))
    assert res.record["status"] == "finished"
    assert not (tmp_path / "jobs" / res.record["id"]).exists()
    assert not any("tensorboard" in m.lower() for m in messages)


def test_a_tracker_that_fails_mid_run_stops_logging_and_training_goes_on(tmp_path, tiny_sd15, sample_dataset,
                                                                         monkeypatch, caplog):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    real = SummaryWriter.add_scalar

    def add_scalar(self, tag, value, global_step=None, **kw):
        if global_step == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, tag, value, global_step=global_step, **kw)

    monkeypatch.setattr(SummaryWriter, "add_scalar", add_scalar)
    with caplog.at_level(logging.WARNING, logger="lora_studio.tracking"):
        res = _run(tmp_path, tiny_sd15, sample_dataset, max_train_steps=5, report_to=["tensorboard"])
    assert res.record["status"] == "finished" and res.lora_path.is_file()
    assert len(res.record["metrics"]["losses"]) == 5  # the record's own curve is whole
    warnings = [r.getMessage() for r in caplog.records if r.name == "lora_studio.tracking"]
    assert len(warnings) == 1 and "No space left" in warnings[0] and "training goes on" in warnings[0]
    assert [e.step for e in _events(tmp_path, res.record["id"]).Scalars("train/loss")] == [1, 2]


def test_wandb_missing_is_a_clear_config_error_and_writes_nothing(tmp_path, tiny_sd15, sample_dataset,
                                                                  monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as on a machine without it
    (problem,) = reporter_problems(["tensorboard", "wandb"])
    assert problem.fix == "pip install wandb, or remove 'wandb' from report_to"
    assert reporter_problems(["tensorboard"]) == [] and reporter_problems([]) == []
    before = tree(tmp_path)
    with pytest.raises(ConfigError, match="pip install wandb"):
        _run(tmp_path, tiny_sd15, sample_dataset, report_to=["tensorboard", "wandb"])
    assert tree(tmp_path) == before  # said before the model loads: no record, no event file


def test_wandb_through_accelerate_with_a_stand_in_module(tmp_path, tiny_sd15, sample_dataset, monkeypatch):
    """The W&B path without the package or the network: a stand-in records what accelerate's tracker sends."""
    import accelerate.tracking
    import accelerate.utils
    from accelerate.utils import LoggerType

    calls: list = []
    run = types.SimpleNamespace(log=lambda d, step: calls.append(("log", step, d)),
                                finish=lambda: calls.append(("finish",)))
    fake = types.ModuleType("wandb")
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    fake.init = lambda **kw: calls.append(("init", kw)) or run
    fake.Image = lambda im: ("image", tuple(im.shape))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(accelerate.utils, "is_wandb_available", lambda: True)
    monkeypatch.setattr(accelerate.tracking, "_available_trackers",
                        [*accelerate.tracking._available_trackers, LoggerType.WANDB])
    res = _run(tmp_path, tiny_sd15, sample_dataset, max_train_steps=2, report_to=["wandb", "tensorboard", "wandb"],
               preview_every=0, preview_sampling_steps=2)
    job_id = res.record["id"]
    kind, init = calls[0]
    assert kind == "init" and {k: init[k] for k in ("project", "name", "dir")} == {
        "project": PROJECT, "name": job_id, "dir": str(tmp_path / "jobs" / job_id)}
    without_threads = lambda d: {k: v for k, v in d.items() if k != "num_threads"}  # noqa: E731
    assert without_threads(init["config"]) == without_threads(res.record["config"])
    logged = [c for c in calls if c[0] == "log"]
    losses = res.record["metrics"]["losses"]
    assert [(c[1], c[2]["train/loss"]) for c in logged[:2]] == [(1, losses[0]), (2, losses[1])]
    assert logged[2][1] == 2 and list(logged[2][2]) == ["preview"]
    assert logged[2][2]["preview"][0][0] == "image" and calls[-1] == ("finish",)
    assert [e.step for e in _events(tmp_path, job_id).Scalars("train/loss")] == [1, 2]  # both trackers ran
