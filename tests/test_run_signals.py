"""Ctrl-C and SIGTERM during a headless run, with a real subprocess and real signals.

The first signal stops the run after the current step with a checkpoint, a record saying
"cancelled" and the exact command that continues it; that command, pasted into a shell, ends
with a LoRA bitwise equal (CPU) to an uninterrupted run's. No traceback reaches the terminal.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, tiny_overrides
from safetensors.torch import load_file

from trainer.cli import main

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name == "nt", reason="POSIX signals only")

STEPS = 40


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")


def _job(tmp_path, base, data, sub, **kw):
    folder = tmp_path / sub
    folder.mkdir(parents=True, exist_ok=True)
    cfg = tiny_overrides(folder, base, data, max_train_steps=STEPS, preview_every=-1, report_to=[], **kw)
    job = folder / "job.json"
    job.write_text(json.dumps(cfg))
    return job


def _start(job):
    return subprocess.Popen([sys.executable, "-m", "trainer", "train", "--job", str(job)], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(proc, fragment, timeout=120):
    """Read stdout until a line holds `fragment`; returns the lines read."""
    lines, t0 = [], time.monotonic()
    for line in proc.stdout:
        lines.append(line)
        if fragment in line:
            return lines
        assert time.monotonic() - t0 < timeout, "".join(lines)
    raise AssertionError(f"the run ended before printing {fragment!r}:\n{''.join(lines)}\n{proc.stderr.read()}")


def _finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    assert "Traceback" not in out + err, out + err
    return proc.returncode, out, err


def _tensors(folder):
    files = sorted((folder / "loras").glob("*.safetensors"))
    assert len(files) == 1, files
    assert files[0].with_suffix(".adapter_config.json").is_file()
    return load_file(str(files[0]))


def _records(folder):
    return [json.loads(p.read_text()) for p in sorted((folder / "jobs").glob("*.json"))]


def _no_partials(folder):
    return [p for p in folder.rglob("*") if ".partial" in p.name]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_sd15):
    """The uninterrupted run, through the same CLI."""
    from conftest import SAMPLE

    tmp = tmp_path_factory.mktemp("straight")
    job = _job(tmp, tiny_sd15, SAMPLE, "a")
    assert main(["train", "--job", str(job)]) == 0
    return _tensors(tmp / "a"), _records(tmp / "a")[0]


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_and_the_printed_command_resumes_bitwise(tmp_path, tiny_sd15, straight, sig, code):
    from conftest import SAMPLE

    job = _job(tmp_path, tiny_sd15, SAMPLE, "b")
    proc = _start(job)
    _wait_for(proc, f"step 2/{STEPS}")
    proc.send_signal(sig)
    rc, out, err = _finish(proc)
    assert rc == code, (out, err)
    assert not (tmp_path / "b" / "loras").exists()  # a stopped run writes no LoRA
    [record] = _records(tmp_path / "b")
    assert record["status"] == "cancelled"
    ck = record["checkpoint"]
    step = json.loads(open(os.path.join(ck, "state.json")).read())["step"]
    assert 2 <= step < STEPS  # within one step of the signal, well before the end
    assert f"checkpoint: {ck}" in err
    command = err.split("to continue, run:\n", 1)[1].strip().splitlines()[0]
    assert "resume_from=" in command and not _no_partials(tmp_path)

    resumed = subprocess.run(command, shell=True, env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Traceback" not in resumed.stdout + resumed.stderr
    assert f"resuming from step-{step:06d}" in resumed.stdout
    expected, straight_record = straight
    got = _tensors(tmp_path / "b")
    assert got.keys() == expected.keys()
    for k in got:
        assert torch.equal(got[k], expected[k]), k  # bitwise on CPU
    finished = [r for r in _records(tmp_path / "b") if r["status"] == "finished"]
    assert len(finished) == 1 and finished[0]["metrics"]["losses"] == straight_record["metrics"]["losses"]


def test_signal_before_the_first_step_stops_cleanly_without_a_checkpoint(tmp_path, tiny_sd15):
    from conftest import SAMPLE

    job = _job(tmp_path, tiny_sd15, SAMPLE, "c")
    proc = _start(job)
    _wait_for(proc, "loading base model")
    proc.send_signal(signal.SIGTERM)
    rc, out, err = _finish(proc)
    assert rc == 143, (out, err)
    assert "cancelled after step 0" in err and "to continue, run:" not in err
    assert not (tmp_path / "c" / "loras").exists()
    assert not list((tmp_path / "c").rglob("step-*"))
    assert all(r["status"] == "cancelled" for r in _records(tmp_path / "c"))


def test_a_second_signal_stops_at_once_and_says_so(tmp_path, tiny_sd15):
    from conftest import SAMPLE

    job = _job(tmp_path, tiny_sd15, SAMPLE, "d")
    proc = _start(job)
    _wait_for(proc, f"step 2/{STEPS}")
    proc.send_signal(signal.SIGINT)
    time.sleep(1.5)  # a second press, not the same Ctrl-C delivered twice
    proc.send_signal(signal.SIGINT)
    rc, out, err = _finish(proc)
    # 130 when our handler ends the process; on a fast machine the first stop may already be finishing when
    # the second press lands, and the interpreter, shutting down, dies of the signal (-2; a shell shows 130)
    assert rc in (130, -signal.SIGINT), (rc, out, err)
    assert "stop" in err
    assert not (tmp_path / "d" / "loras").exists()
    [record] = _records(tmp_path / "d")
    assert record["status"] in ("interrupted", "cancelled")  # the 2nd signal may land after the 1st was handled
    for ck in (tmp_path / "d").rglob("step-*"):  # whatever checkpoint exists is whole
        assert (ck / "state.json").is_file()


def test_a_repeat_within_a_second_is_the_same_request_a_later_one_stops_at_once(monkeypatch):
    import trainer.interrupt as intr

    now = {"t": 100.0}
    monkeypatch.setattr(intr.time, "monotonic", lambda: now["t"])
    # Python's own SIGINT handler, as in a terminal: a shell starts background jobs (`cmd &`, nohup) with SIGINT
    # ignored, and the test is about what StopOnSignal restores, not what the test runner inherited
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _repeat_then_stop(intr, now)
    finally:
        signal.signal(signal.SIGINT, inherited)


def _repeat_then_stop(intr, now: dict) -> None:
    with intr.StopOnSignal() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested() and stop.exit_code == 143
        now["t"] += 0.2
        os.kill(os.getpid(), signal.SIGINT)  # accelerate's launcher forwarding the same stop: ignored
        assert stop.requested()
        now["t"] += 2.0
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


@pytest.mark.slow
def test_ctrl_c_under_accelerate_launch_stops_every_process_at_the_same_step(tmp_path, tiny_sd15):
    """Ctrl-C reaches the whole process group (the launcher and both workers); the launcher then also sends
    SIGTERM. Every worker must stop at the same micro-batch, or one waits forever in the gradient all-reduce."""
    import shutil

    from conftest import SAMPLE

    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    if shutil.which("accelerate", path=os.path.dirname(sys.executable)) is None:
        pytest.skip("the accelerate command is not installed beside this Python")
    job = _job(tmp_path, tiny_sd15, SAMPLE, "m", train_batch_size=1)
    proc = subprocess.Popen([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "trainer", "train", "--job",
                             str(job)], cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _wait_for(proc, f"step 2/{STEPS}", timeout=400)
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    [record] = _records(tmp_path / "m")
    assert record["status"] == "cancelled", (record.get("message"), err[-2000:])
    step = json.loads(open(os.path.join(record["checkpoint"], "state.json")).read())["step"]
    assert 2 <= step < STEPS
    assert not (tmp_path / "m" / "loras").exists()
