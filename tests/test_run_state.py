"""Leftovers and shared folders: what a killed run leaves is cleaned at the next start, a record whose
process is gone reads "interrupted", a finished run is not trained again, runs sharing a jobs folder
never touch each other's checkpoints or half-built files, and files get the umask's mode."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, tiny_overrides
from data_fixtures import snapshot

from trainer import TrainConfig, TrainingCancelled
from trainer import checkpoint as ckpt
from trainer.checkpoint import AlreadyFinished
from trainer.cli import main
from trainer.atomic import write_json_atomic
from trainer.export import save_lora
from trainer.job import run_job
from trainer.loop import Callbacks
from trainer.runstate import clean_partials, mark_interrupted_records, record_status


def _cfg(tmp_path, base, data, **kw):
    kw.setdefault("preview_every", -1)
    kw.setdefault("report_to", [])
    return TrainConfig.from_dict(tiny_overrides(tmp_path, base, data, **kw))


@pytest.fixture(scope="module")
def dead_pid():
    """The id of a process that has ended."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def live_pid():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield p.pid
    p.kill()
    p.wait()


def _cancelled_at(cfg, step):
    stop = {"now": False}
    with pytest.raises(TrainingCancelled) as e:
        run_job(cfg, Callbacks(on_step=lambda i: stop.update(now=i.step == step), should_stop=lambda: stop["now"]))
    return e.value


# ------------------------------------------------------------------ stale partials (6)
def test_partials_of_dead_processes_go_and_live_ones_stay(tmp_path, dead_pid, live_pid):
    dead_file = tmp_path / f".tiny.safetensors.{dead_pid}-abc.partial"
    dead_dir = tmp_path / f".step-000004.{dead_pid}-xyz.partial"
    live_file = tmp_path / f".tiny.safetensors.{live_pid}-abc.partial"
    dead_file.write_bytes(b"half")
    dead_dir.mkdir()
    (dead_dir / "adapter.safetensors").write_bytes(b"half")
    live_file.write_bytes(b"being written")
    keep = tmp_path / "tiny.safetensors"
    keep.write_bytes(b"done")
    removed = clean_partials(tmp_path)
    assert sorted(removed) == sorted([dead_file, dead_dir])
    assert live_file.exists() and keep.exists()


def test_legacy_partials_without_a_pid_go_only_when_old(tmp_path):
    old = tmp_path / ".tiny.safetensors.k2j3h4.partial"
    old_ck = tmp_path / ".step-000002.partial-q1w2e3"
    fresh = tmp_path / ".tiny.safetensors.zzzzzz.partial"
    for p in (old, fresh):
        p.write_bytes(b"x")
    old_ck.mkdir()
    two_hours_ago = time.time() - 7200
    for p in (old, old_ck):
        os.utime(p, (two_hours_ago, two_hours_ago))
    assert sorted(clean_partials(tmp_path)) == sorted([old, old_ck])
    assert fresh.exists()


def test_the_next_start_removes_what_a_killed_run_left(tmp_path, tiny_sd15, sample_dataset, dead_pid):
    cfg = _cfg(tmp_path, tiny_sd15, sample_dataset, max_train_steps=2)
    ck_dir = tmp_path / "jobs" / "checkpoints" / "tiny" / "20261201-000000-tiny-aaaaaa"
    leftovers = [tmp_path / "loras" / f".tiny.safetensors.{dead_pid}-1.partial",
                 tmp_path / "loras" / f".tiny.adapter_config.json.{dead_pid}-2.partial",
                 tmp_path / "jobs" / f".x.json.{dead_pid}-3.partial",
                 ck_dir / f".step-000002.{dead_pid}-4.partial"]
    for p in leftovers:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")
    run_job(cfg)
    assert not [p for p in leftovers if p.exists()]
    assert not [p for p in tmp_path.rglob("*") if ".partial" in p.name]


def test_a_half_built_demo_model_is_replaced(tmp_path, dead_pid):
    from trainer.models import build_tiny_model

    stale = tmp_path / f".tiny-sd15.{dead_pid}-x.partial"
    (stale / "unet").mkdir(parents=True)
    half = tmp_path / "tiny-sd15"  # an incomplete folder under the final name (older builds)
    (half / "unet").mkdir(parents=True)
    out = build_tiny_model(half, "sd15")
    assert (out / "model_index.json").is_file() and (out / "unet" / "config.json").is_file()
    assert not stale.exists() and not [p for p in tmp_path.iterdir() if ".partial" in p.name]


# ------------------------------------------------------------------ records of runs that are gone (4)
def _record(tmp_path, name, status, proc):
    p = tmp_path / "jobs" / f"{name}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"id": name, "status": status, "process": proc}))
    return p


def test_a_running_record_whose_process_is_gone_reads_interrupted(tmp_path, dead_pid, live_pid):
    host = socket.gethostname()
    gone = _record(tmp_path, "gone", "running", {"pid": dead_pid, "host": host})
    alive = _record(tmp_path, "alive", "running", {"pid": live_pid, "host": host})
    elsewhere = _record(tmp_path, "elsewhere", "running", {"pid": dead_pid, "host": host + "-other"})
    done = _record(tmp_path, "done", "finished", {"pid": dead_pid, "host": host})
    assert record_status(json.loads(gone.read_text())) == "interrupted"
    assert mark_interrupted_records(tmp_path / "jobs") == [gone]
    assert json.loads(gone.read_text())["status"] == "interrupted"
    for p, status in ((alive, "running"), (elsewhere, "running"), (done, "finished")):
        assert json.loads(p.read_text())["status"] == status


def test_the_next_run_rewrites_records_of_killed_runs(tmp_path, tiny_sd15, sample_dataset, dead_pid):
    gone = _record(tmp_path, "gone", "running", {"pid": dead_pid, "host": socket.gethostname()})
    run_job(_cfg(tmp_path, tiny_sd15, sample_dataset, max_train_steps=1))
    assert json.loads(gone.read_text())["status"] == "interrupted"


def test_a_record_without_process_is_left_as_it_is(tmp_path):
    p = tmp_path / "jobs" / "old.json"
    p.parent.mkdir()
    p.write_text(json.dumps({"status": "running"}))
    (tmp_path / "jobs" / "broken.json").write_text("{not json")
    assert mark_interrupted_records(tmp_path / "jobs") == []


# ------------------------------------------------------------------ resume after a finished run (5)
def test_resume_latest_after_a_finished_run_says_so_and_writes_nothing(tmp_path, tiny_sd15, sample_dataset,
                                                                       capsys):
    cfg = _cfg(tmp_path, tiny_sd15, sample_dataset, max_train_steps=4, checkpointing_steps=2)
    run_job(cfg)
    before = snapshot(tmp_path / "loras")
    with pytest.raises(AlreadyFinished, match="finished and wrote its LoRA"):
        run_job(cfg.replace(resume_from="latest"))
    job = tmp_path / "job.json"
    job.write_text(cfg.to_json())
    assert main(["train", "--job", str(job), "--set", "resume_from=latest"]) == 0
    out, err = capsys.readouterr()
    assert "nothing to do" in out and "Traceback" not in out + err
    assert snapshot(tmp_path / "loras") == before  # no second LoRA
    assert ckpt.resolve_resume(cfg.replace(resume_from="auto"), ckpt.find(cfg)[-1].state["fingerprint"]) is None


def test_resume_latest_after_a_resumed_run_finished_says_so(tmp_path, tiny_sd15, sample_dataset):
    cfg = _cfg(tmp_path, tiny_sd15, sample_dataset, max_train_steps=4)
    _cancelled_at(cfg, 2)
    run_job(cfg.replace(resume_from="latest"))  # continues the cancelled run to the end
    n = len(list((tmp_path / "loras").glob("*.safetensors")))
    with pytest.raises(AlreadyFinished):
        run_job(cfg.replace(resume_from="latest"))
    assert len(list((tmp_path / "loras").glob("*.safetensors"))) == n == 1


def test_changed_max_grad_norm_refuses_the_resume(tmp_path, tiny_sd15, sample_dataset):
    cfg = _cfg(tmp_path, tiny_sd15, sample_dataset, max_train_steps=4)
    _cancelled_at(cfg, 2)
    with pytest.raises(Exception, match="max_grad_norm was 1.0, now 0.5"):
        run_job(cfg.replace(resume_from="latest", max_grad_norm=0.5))


# ------------------------------------------------------------------ runs sharing a jobs folder (5)
def test_each_run_prunes_only_its_own_checkpoints(tmp_path, tiny_sd15, sample_dataset, live_pid):
    """Keyed by LoRA name, a second run deleted the first one's checkpoints. Now each job has its folder."""
    other = tmp_path / "jobs" / "checkpoints" / "tiny" / "20261201-000000-tiny-other1" / "step-000001"
    other.mkdir(parents=True)
    (other / "state.json").write_text(json.dumps({"step": 1, "saved_at": time.time(), "fingerprint": {},
                                                  "process": {"pid": live_pid, "host": socket.gethostname()}}))
    before = snapshot(other.parent)
    cfg = _cfg(tmp_path, tiny_sd15, sample_dataset, max_train_steps=3, checkpointing_steps=1,
               checkpoints_total_limit=1)
    res = run_job(cfg)
    assert snapshot(other.parent) == before
    mine = ckpt.complete_checkpoints(tmp_path / "jobs" / "checkpoints" / "tiny" / res.record["id"])
    assert [c.step for c in mine] == [2]


def test_a_live_runs_checkpoint_is_never_resumed(tmp_path, tiny_sd15, sample_dataset, live_pid):
    cfg = _cfg(tmp_path, tiny_sd15, sample_dataset, max_train_steps=4)
    err = _cancelled_at(cfg, 2)
    state_file = err.checkpoint / "state.json"
    state = json.loads(state_file.read_text())
    state["process"] = {"pid": live_pid, "host": socket.gethostname()}  # as if another run were still writing
    state_file.write_text(json.dumps(state))
    with pytest.raises(Exception, match="no checkpoint of 'tiny' exists"):
        run_job(cfg.replace(resume_from="latest"))


def _popen(code):
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1"))


def test_three_processes_building_the_demo_model_at_once(tmp_path):
    """Was 3/3 crashes: every process built into the same `.partial` folder."""
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from trainer.models import build_tiny_model; "
            f"print(build_tiny_model({str(tmp_path / 'demo' / 'tiny-sd15')!r}, 'sd15'))")
    procs = [_popen(code) for _ in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert all("Traceback" not in o + e for o, e in outs)
    assert {o.strip().splitlines()[-1] for o, _ in outs} == {str(tmp_path / "demo" / "tiny-sd15")}
    assert not [p for p in (tmp_path / "demo").iterdir() if ".partial" in p.name]
    from trainer.models import load_base_model

    assert load_base_model(str(tmp_path / "demo" / "tiny-sd15")).family == "sd15"


def test_two_runs_of_one_name_in_one_jobs_folder_at_once(tmp_path, tiny_sd15, sample_dataset):
    """Was 2/3 crashes in checkpoint.save's rmtree, and each pruned the other's checkpoints."""
    job = tmp_path / "job.json"
    job.write_text(json.dumps(tiny_overrides(tmp_path, tiny_sd15, sample_dataset, max_train_steps=6,
                                             checkpointing_steps=1, checkpoints_total_limit=1, preview_every=-1,
                                             report_to=[])))
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from trainer.cli import main; "
            f"sys.exit(main(['train', '--job', {str(job)!r}]))")
    procs = [_popen(code) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(p.name for p in (tmp_path / "loras").glob("*.safetensors")) == ["tiny.safetensors",
                                                                                  "tiny_2.safetensors"]
    records = [json.loads(p.read_text()) for p in (tmp_path / "jobs").glob("*.json")]
    assert sorted(r["status"] for r in records) == ["finished", "finished"]
    for r in records:  # each run kept its own newest checkpoint (limit 1), untouched by the other
        assert [c.step for c in ckpt.complete_checkpoints(tmp_path / "jobs" / "checkpoints" / "tiny" / r["id"])] \
            == [5]
    assert not [p for p in tmp_path.rglob("*") if ".partial" in p.name]


# ------------------------------------------------------------------ a kill between the two files of a LoRA (4)
@pytest.mark.parametrize("stage", ["config_written", "lora_written", "config_linked", "lora_linked"])
def test_a_kill_at_any_point_of_the_save_leaves_no_lora_without_its_config(tmp_path, stage):
    out = tmp_path / "loras"
    code = f"""
import os, signal, sys
sys.path.insert(0, {str(REPO)!r})
import torch
import trainer.atomic as at
import trainer.export as ex
stage = {stage!r}
real_prepare, real_commit = at.prepare, at.commit
def prepare(path, write, **kw):
    tmp = real_prepare(path, write, **kw)
    if (stage == "config_written" and path.name.endswith(".json")) or (stage == "lora_written" and
                                                                       path.suffix == ".safetensors"):
        os.kill(os.getpid(), signal.SIGKILL)
    return tmp
def commit(tmp, path, overwrite):
    real_commit(tmp, path, overwrite)
    if (stage == "config_linked" and path.name.endswith(".json")) or (stage == "lora_linked" and
                                                                      path.suffix == ".safetensors"):
        os.kill(os.getpid(), signal.SIGKILL)
at.prepare, at.commit = prepare, commit
ex.save_lora({str(out)!r}, "tiny", {{"a": torch.zeros(2)}}, {{}}, {{"rank": 1}})
"""
    p = _popen(code)
    p.communicate(timeout=600)
    assert p.returncode == -signal.SIGKILL
    loras = list(out.glob("*.safetensors"))
    for lora in loras:
        assert lora.with_suffix(".adapter_config.json").is_file(), lora
    assert bool(loras) == (stage == "lora_linked")
    # the next save is whole and never mixes with the leftovers
    path, cfg_path = save_lora(out, "tiny", {"a": torch.ones(2)}, {}, {"rank": 2})
    assert json.loads(cfg_path.read_text()) == {"rank": 2} and path.with_suffix(".adapter_config.json") == cfg_path


# ------------------------------------------------------------------ file modes follow the umask (3)
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path, cfg_path = save_lora(tmp_path / "loras", "x", {"a": torch.zeros(1)}, {}, {})
        record = write_json_atomic(tmp_path / "jobs" / "r.json", {"a": 1}, overwrite=False)
        ck = ckpt.save(tmp_path / "ck", 1, {"a": torch.zeros(1)}, {}, {}, {}, keep=1)
    finally:
        os.umask(old)
    for p in (path, cfg_path, record, ck / "adapter.safetensors"):
        assert (p.stat().st_mode & 0o777) == mode, (p, oct(p.stat().st_mode))
    assert (ck.stat().st_mode & 0o777) == (0o777 & ~umask)


def test_jobs_list_shows_a_dead_runs_record_as_interrupted(tmp_path, dead_pid, capsys):
    p = tmp_path / "jobs" / "gone.json"
    p.parent.mkdir()
    p.write_text(json.dumps({"id": "gone", "status": "running", "config": {"name": "x"},
                             "process": {"pid": dead_pid, "host": socket.gethostname()}}))
    assert main(["jobs", "--jobs-dir", str(tmp_path / "jobs")]) == 0
    assert "gone  interrupted" in capsys.readouterr().out
    assert main(["jobs", "show", "gone", "--jobs-dir", str(tmp_path / "jobs")]) == 0
    assert "(interrupted)" in capsys.readouterr().out
