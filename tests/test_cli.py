"""The terminal command: check, import, presets, jobs, resume, and reruns that give the same LoRA."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_overrides, tree
from safetensors.torch import load_file

from trainer import TrainConfig, TrainingCancelled
from trainer.cli import main
from trainer.job import run_job
from trainer.loop import Callbacks


def _job(tmp_path, base, dataset, **extra) -> Path:
    job = tmp_path / "job.json"
    job.write_text(json.dumps(tiny_overrides(tmp_path, base, dataset, max_train_steps=4, preview_every=-1, **extra)))
    return job


def _records(tmp_path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "jobs").glob("*.json"))]


def test_console_script_is_the_cli_main():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["lora-studio"] == "lora_studio.cli:main"
    assert meta["tool"]["setuptools"]["package-dir"]["lora_studio"] == "trainer"


def test_check_a_dataset(sample_dataset, tmp_path, capsys):
    assert main(["check", str(sample_dataset), "--trigger", "wcfox"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Dataset {sample_dataset}: ready") and "4 usable image(s)" in out
    (tmp_path / "empty").mkdir()
    assert main(["check", str(tmp_path / "empty")]) == 1
    out = capsys.readouterr().out
    assert "BLOCKED" in out and out.count("[NO_IMAGES]") == 1, out  # said once, in the report


def test_import_a_zip_then_refuse_an_unsafe_one(sample_dataset, tmp_path, capsys):
    zp = tmp_path / "fox.zip"
    with zipfile.ZipFile(zp, "w") as z:
        for f in sample_dataset.rglob("*"):
            if f.is_file():
                z.write(f, f"fox/{f.relative_to(sample_dataset)}")
    assert main(["import", str(zp), "--dest", str(tmp_path / "datasets"), "--trigger", "wcfox"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "datasets" / "fox" / "metadata.jsonl").is_file()
    cmd = out.strip().splitlines()[-1].split("train on it: ", 1)[1]
    assert shlex.split(cmd.split("&&")[-1])[3:6] == ["train", "--dataset", str(tmp_path / "datasets" / "fox")]
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("../evil.png", b"x")
    before = tree(tmp_path)
    assert main(["import", str(bad), "--dest", str(tmp_path / "datasets")]) == 2
    assert "error:" in capsys.readouterr().err and tree(tmp_path) == before


def test_presets_are_described_in_english_with_the_guides_titles(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "Fotostudio – Schnellstart" in out and "Atelier – Detailtreue" in out and "Galerie – Feinabstimmung" in out
    assert "quick tests" in out and "schnelle Tests" not in out and "num_threads" in out


def test_recorded_threads_are_applied_on_rerun(tmp_path, tiny_sd15, sample_dataset):
    seen: list[int] = []
    cb = Callbacks(on_step=lambda info: seen.append(torch.get_num_threads()))
    cfg = TrainConfig.from_dict(tiny_overrides(tmp_path, tiny_sd15, sample_dataset, max_train_steps=2,
                                               preview_every=-1, num_threads=2))
    first = run_job(cfg, cb)
    assert seen == [2, 2] and torch.get_num_threads() == 1  # pinned during the run, restored after it
    assert first.record["config"]["num_threads"] == 2
    again = run_job(TrainConfig.from_dict(dict(first.record["config"], num_threads=0)))
    assert again.record["config"]["num_threads"] == 1  # "machine default" is recorded as the number used


def test_jobs_list_show_and_resume_after_a_cancel(tmp_path, tiny_sd15, sample_dataset, capsys):
    cfg = TrainConfig.from_dict(tiny_overrides(tmp_path, tiny_sd15, sample_dataset, max_train_steps=4,
                                               preview_every=-1))
    steps = []
    with pytest.raises(TrainingCancelled):
        run_job(cfg, Callbacks(on_step=lambda i: steps.append(i.step), should_stop=lambda: len(steps) >= 2))
    (rec,) = _records(tmp_path)
    assert rec["status"] == "cancelled"
    jobs = ["--jobs-dir", str(tmp_path / "jobs")]
    assert main(["jobs", *jobs]) == 0
    assert rec["id"] in capsys.readouterr().out
    assert main(["jobs", "show", rec["id"], *jobs]) == 0
    shown = capsys.readouterr().out
    assert "cancelled" in shown and rec["commands"]["resume"] in shown
    assert main(["resume", rec["id"], *jobs]) == 0
    done = [r for r in _records(tmp_path) if r["status"] == "finished"]
    assert len(done) == 1 and done[0]["metrics"]["resumed_from_step"] == 2 and done[0]["metrics"]["steps"] == 4
    assert main(["jobs", "show", "no-such-job", *jobs]) == 2
    assert "lora-studio jobs" in capsys.readouterr().err


@pytest.mark.slow
def test_every_printed_rerun_command_gives_the_same_lora(tmp_path, tiny_sd15, sample_dataset):
    """`train --job <record>` and the record's `accelerate launch …` give the same file, although accelerate
    starts its process with OMP_NUM_THREADS=1 and a plain run uses every core."""
    pytest.importorskip("accelerate.commands.launch")
    torch.set_num_threads(2)  # a plain run on this two-core machine
    try:
        assert main(["train", "--job", str(_job(tmp_path, tiny_sd15, sample_dataset, num_threads=0))]) == 0
    finally:
        torch.set_num_threads(1)
    (first,) = _records(tmp_path)
    assert first["config"]["num_threads"] == 2
    bindir = Path(sys.executable).parent
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    subprocess.run(first["commands"]["accelerate"], shell=True, check=True, env=env, timeout=600,
                   capture_output=True)
    second = [r for r in _records(tmp_path) if r["id"] != first["id"]][0]
    a, b = load_file(first["outputs"]["lora"]), load_file(second["outputs"]["lora"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_one_progress_bar_with_loss_rate_and_eta_on_a_terminal(capsys):
    from trainer.cli import _Progress
    from trainer.loop import StepInfo

    bar = _Progress(tty=True)
    for step in range(1, 5):
        bar(StepInfo(step, 4, 1.0 / step, 1e-4, step * 0.1, (4 - step) * 0.1))
    err = capsys.readouterr().err
    assert "training: 100%" in err and "4/4" in err and "loss=0.2500" in err and "step/s" in err
    assert err.count("training:   0%") <= 1  # one bar, not one per step
    plain = _Progress(tty=False)
    for step in range(1, 41):
        plain(StepInfo(step, 40, 1.0, 1e-4, step * 0.1, (40 - step) * 0.1))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("step 1/40  loss 1.0000") and len(out) == 21 and out[-1].startswith("step 40/40")


def test_eta_in_a_log_reads_as_hours_and_minutes(capsys):
    """A full-size model on a CPU logged 'eta 157971s'; a reader wants '43h 52m'."""
    from trainer.cli import _Progress
    from trainer.loop import StepInfo

    plain = _Progress(tty=False)
    plain(StepInfo(1, 800, 1.0, 1e-4, 197.0, 157971.0))
    plain(StepInfo(40, 800, 1.0, 1e-4, 197.0, 185.0))
    plain(StepInfo(80, 800, 1.0, 1e-4, 197.0, 7.4))
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("eta 43h 52m") and out[1].endswith("eta 3m 05s") and out[2].endswith("eta 7s")
