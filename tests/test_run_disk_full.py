"""A full disk at each place a run writes: a clear message, nothing half-written, the trained work kept
where it can be, and an exit status and record that tell the truth.

The disk is made "full" by raising ENOSPC from the one write each case is about (a real full
filesystem needs a mount this test cannot make); everything around it is the real code.
"""
from __future__ import annotations

import errno
import json

import pytest
import torch
from conftest import tiny_overrides
from safetensors.torch import load_file

from trainer import TrainConfig, TrainingCancelled
from trainer import checkpoint as ckpt
from trainer.cli import main
from trainer.errors import ExportError, LoraStudioError, ModelLoadError
from trainer.job import run_job
from trainer.loop import Callbacks


def _full(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


def _cfg(tmp_path, base, data, **kw):
    kw.setdefault("preview_every", -1)
    kw.setdefault("report_to", [])
    return TrainConfig.from_dict(tiny_overrides(tmp_path, base, data, **kw))


def _partials(tmp_path):
    return [p for p in tmp_path.rglob("*") if ".partial" in p.name]


# ------------------------------------------------------------------ checkpoints (3)
def test_a_periodic_checkpoint_on_a_full_disk_warns_and_training_goes_on(tmp_path, tiny_sd15, sample_dataset,
                                                                          monkeypatch):
    real = ckpt._save_torch
    monkeypatch.setattr(ckpt, "_save_torch", lambda path, obj: _full() if "step-000002" in path.parent.name
                        else real(path, obj))
    messages = []
    res = run_job(_cfg(tmp_path, tiny_sd15, sample_dataset, max_train_steps=5, checkpointing_steps=2),
                  Callbacks(on_message=messages.append))
    assert res.lora_path.is_file()
    assert any("checkpoint of step 2" in m and "No space left" in m and "Training goes on" in m for m in messages)
    assert [c.step for c in ckpt.find(_cfg(tmp_path, tiny_sd15, sample_dataset))] == [4]
    assert not _partials(tmp_path)


def test_cancel_on_a_full_disk_says_the_checkpoint_was_not_kept(tmp_path, tiny_sd15, sample_dataset, monkeypatch):
    monkeypatch.setattr(ckpt, "_save_torch", _full)
    stop = {"now": False}
    with pytest.raises(TrainingCancelled) as e:
        run_job(_cfg(tmp_path, tiny_sd15, sample_dataset, max_train_steps=6),
                Callbacks(on_step=lambda i: stop.update(now=i.step == 2), should_stop=lambda: stop["now"]))
    assert "could not be written" in str(e.value) and "No space left" in str(e.value)
    assert e.value.checkpoint is None
    record = json.loads(next((tmp_path / "jobs").glob("*.json")).read_text())
    assert record["status"] == "cancelled" and "checkpoint" not in record
    assert not _partials(tmp_path) and not list(tmp_path.rglob("step-*"))


def test_cli_cancel_on_a_full_disk_prints_no_resume_command(tmp_path, tiny_sd15, sample_dataset, monkeypatch,
                                                            capsys):
    import trainer.interrupt as intr

    monkeypatch.setattr(ckpt, "_save_torch", _full)
    polls = []
    # as if Ctrl-C came during step 3 (the loop polls once per micro-batch)
    monkeypatch.setattr(intr.StopOnSignal, "requested", lambda self: polls.append(1) or len(polls) > 3)
    job = tmp_path / "job.json"
    job.write_text(json.dumps(tiny_overrides(tmp_path, tiny_sd15, sample_dataset, report_to=[])))
    assert main(["train", "--job", str(job)]) == 130
    out, err = capsys.readouterr()
    assert "stopped:" in err and "after step 3" in err and "could not be written" in err
    assert "to continue, run:" not in err and "Traceback" not in out + err


# ------------------------------------------------------------------ TensorBoard at the start (2)
def _event_writer():
    pytest.importorskip("tensorboard")
    from tensorboard.summary.writer.event_file_writer import EventFileWriter  # what accelerate's tracker writes with

    return EventFileWriter


def test_tensorboard_on_a_full_disk_stops_before_training_and_leaves_nothing(tmp_path, tiny_sd15, sample_dataset,
                                                                             monkeypatch):
    writer = _event_writer()
    real = writer.__init__

    def init(self, *a, **k):
        real(self, *a, **k)  # the event file exists, its header did not reach the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer, "__init__", init)
    with pytest.raises(ExportError, match="Could not start experiment logging.*No space left.*report_to"):
        run_job(_cfg(tmp_path, tiny_sd15, sample_dataset, report_to=["tensorboard"]))
    jobs = tmp_path / "jobs"
    assert not list(jobs.rglob("events.out.tfevents*"))
    assert not jobs.exists() or not [p for p in jobs.iterdir() if p.is_dir()]
    assert not (tmp_path / "loras").exists()


def test_tensorboard_folder_that_cannot_be_made(tmp_path, tiny_sd15, sample_dataset, monkeypatch, capsys):
    monkeypatch.setattr(_event_writer(), "__init__", _full)
    job = tmp_path / "job.json"
    job.write_text(json.dumps(tiny_overrides(tmp_path, tiny_sd15, sample_dataset, report_to=["tensorboard"])))
    assert main(["train", "--job", str(job)]) == 2
    out, err = capsys.readouterr()
    assert "experiment logging" in err and "Traceback" not in out + err


# ------------------------------------------------------------------ the demo model (2)
def test_demo_model_build_on_a_full_disk_leaves_no_partial(tmp_path, monkeypatch):
    from diffusers import AutoencoderKL

    from trainer.models import build_tiny_model

    monkeypatch.setattr(AutoencoderKL, "save_pretrained", _full)
    with pytest.raises(ModelLoadError, match="Could not build the demo model.*No space left.*Nothing half-built"):
        build_tiny_model(tmp_path / "demo" / "tiny-sd15", "sd15")
    assert [p.name for p in (tmp_path / "demo").iterdir()] in ([], [".tiny-sd15.lock"])


def test_cli_demo_on_a_full_disk_is_one_message(tmp_path, monkeypatch, capsys):
    from diffusers import UNet2DConditionModel

    monkeypatch.setattr(UNet2DConditionModel, "save_pretrained", _full)
    assert main(["train", "--demo", "--jobs-dir", str(tmp_path / "runs" / "jobs")]) == 2
    out, err = capsys.readouterr()
    assert "Could not build the demo model" in err and "Traceback" not in out + err
    assert not [p for p in tmp_path.rglob("*") if ".partial" in p.name or p.name == "tiny-sd15"]


# ------------------------------------------------------------------ the LoRA and the record at the end (4)
def test_lora_write_on_a_full_disk_keeps_the_trained_adapter_and_says_how_to_write_it(tmp_path, tiny_sd15,
                                                                                      sample_dataset, monkeypatch):
    import trainer.export as ex

    cfg = _cfg(tmp_path, tiny_sd15, sample_dataset, max_train_steps=3)
    straight = run_job(_cfg(tmp_path / "straight", tiny_sd15, sample_dataset, max_train_steps=3))
    real = ex._write_safetensors
    monkeypatch.setattr(ex, "_write_safetensors",
                        lambda p, t, m: _full() if "/loras/" in str(p) else real(p, t, m))
    with pytest.raises(ExportError) as e:
        run_job(cfg)
    msg = str(e.value)
    assert "No space left" in msg and "resume_from=" in msg and "without training again" in msg
    assert not (tmp_path / "loras").exists() or not list((tmp_path / "loras").iterdir())
    record = json.loads(next((tmp_path / "jobs").glob("*.json")).read_text())
    assert record["status"] == "failed"
    kept = msg.split("resume_from=", 1)[1].split(" ", 1)[0]
    monkeypatch.setattr(ex, "_write_safetensors", real)  # room again
    res = run_job(cfg.replace(resume_from=kept))
    assert res.record["metrics"]["steps"] == 3 and res.record["metrics"]["resumed_from_step"] == 3
    a, b = load_file(str(straight.lora_path)), load_file(str(res.lora_path))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the kept adapter is the trained one, bit for bit


@pytest.mark.parametrize("which", ["_write_safetensors", "commit"])
def test_a_lora_write_failing_leaves_neither_file(tmp_path, monkeypatch, which):
    import trainer.atomic as at
    import trainer.export as ex

    module = ex if which == "_write_safetensors" else at
    real = getattr(module, which)

    def failing(*a, **k):
        if which == "_write_safetensors":
            _full()  # the data write itself
        if str(a[1]).endswith(".safetensors"):  # the LoRA's link into place, after its config's
            raise ExportError("Could not write: No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(module, which, failing)
    with pytest.raises(ExportError, match="No space left"):
        ex.save_lora(tmp_path, "x", {"a": torch.zeros(1)}, {}, {})
    assert list(tmp_path.iterdir()) == []


def test_final_record_write_failing_still_reports_the_lora(tmp_path, tiny_sd15, sample_dataset, monkeypatch, capsys):
    """Was: 'error' and exit 2 although the LoRA was written, and the record said "running"."""
    import trainer.job as job_mod

    real = job_mod.write_json_atomic
    calls = {"n": 0}

    def flaky(path, data, *a, **k):
        if str(path).endswith(".json") and isinstance(data, dict) and data.get("status") == "finished":
            raise ExportError(f"Could not write '{path}': No space left on device.")
        calls["n"] += 1
        return real(path, data, *a, **k)

    monkeypatch.setattr(job_mod, "write_json_atomic", flaky)
    job = tmp_path / "job.json"
    job.write_text(json.dumps(tiny_overrides(tmp_path, tiny_sd15, sample_dataset, max_train_steps=2, report_to=[],
                                             preview_every=-1)))
    assert main(["train", "--job", str(job)]) == 0
    out, err = capsys.readouterr()
    [lora] = (tmp_path / "loras").glob("*.safetensors")
    assert str(lora) in out and "could not be updated" in err and "Traceback" not in out + err
    assert lora.with_suffix(".adapter_config.json").is_file()


def test_a_record_that_cannot_be_opened_fails_before_training(tmp_path, tiny_sd15, sample_dataset, monkeypatch):
    import trainer.job as job_mod

    monkeypatch.setattr(job_mod, "write_json_atomic", lambda *a, **k: (_ for _ in ()).throw(
        ExportError("Could not write the record: No space left on device.")))
    with pytest.raises(LoraStudioError, match="No space left"):
        run_job(_cfg(tmp_path, tiny_sd15, sample_dataset, max_train_steps=2))
    assert not (tmp_path / "loras").exists()
