"""Long runs you can trust: resume is exact, failures explain themselves and write no LoRA,
names are safe, previews carry the safety terms."""
from __future__ import annotations

import errno
import json
import os

import pytest
import torch
from conftest import tiny_overrides, tree
from safetensors.torch import load_file

from trainer import TrainConfig, TrainingCancelled, TrainingFailed
from trainer import checkpoint as ckpt
from trainer.errors import ExportError
from trainer.atomic import write_json_atomic
from trainer.export import sanitize_name, save_lora
from trainer.job import run_job
from trainer.loop import Callbacks, Trainer


def _cfg(tmp_path, base, data, **kw):
    kw.setdefault("preview_every", -1)
    return TrainConfig.from_dict(tiny_overrides(tmp_path, base, data, **kw))


def test_cancel_then_resume_gives_the_same_lora_bitwise(tmp_path, tiny_sd15, sample_dataset):
    common = dict(max_train_steps=6, train_text_encoder=True, gradient_accumulation_steps=2, train_batch_size=1,
                  checkpointing_steps=0, lora_dropout=0.1, lr_scheduler="cosine", lr_warmup_steps=2)
    straight = run_job(_cfg(tmp_path / "a", tiny_sd15, sample_dataset, **common))

    stop = {"now": False}

    def on_step(info):
        stop["now"] = info.step == 3

    with pytest.raises(TrainingCancelled) as e:
        run_job(_cfg(tmp_path / "b", tiny_sd15, sample_dataset, **common),
                Callbacks(on_step=on_step, should_stop=lambda: stop["now"]))
    assert e.value.step == 3
    assert not (tmp_path / "b" / "loras").exists()  # a cancelled run writes no LoRA
    saved = ckpt.find(_cfg(tmp_path / "b", tiny_sd15, sample_dataset, **common))
    assert [c.step for c in saved] == [3]  # Cancel kept the work
    record = json.loads(next((tmp_path / "b" / "jobs").glob("*.json")).read_text())
    assert record["status"] == "cancelled"

    resumed = run_job(_cfg(tmp_path / "b", tiny_sd15, sample_dataset, resume_from="latest", **common))
    assert resumed.record["resumed_from"].endswith("step-000003")
    a, b = load_file(str(straight.lora_path)), load_file(str(resumed.lora_path))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bitwise on CPU
    assert resumed.record["metrics"]["losses"] == straight.record["metrics"]["losses"]
    # the next Queue after a finished run starts fresh ("auto" skips finished runs)
    assert ckpt.resolve_resume(_cfg(tmp_path / "b", tiny_sd15, sample_dataset, resume_from="auto", **common),
                               saved[0].state["fingerprint"]) is None


def test_resume_with_changed_settings_is_refused(tmp_path, tiny_sd15, sample_dataset):
    stop = {"now": False}
    with pytest.raises(TrainingCancelled):
        run_job(_cfg(tmp_path, tiny_sd15, sample_dataset, max_train_steps=4),
                Callbacks(on_step=lambda i: stop.update(now=True), should_stop=lambda: stop["now"]))
    with pytest.raises(Exception, match="other settings.*rank was 8, now 4"):
        run_job(_cfg(tmp_path, tiny_sd15, sample_dataset, max_train_steps=4, rank=4, alpha=4.0, resume_from="latest"))


def test_periodic_checkpoints_keep_the_last_k(tmp_path, tiny_sd15, sample_dataset):
    run_job(_cfg(tmp_path, tiny_sd15, sample_dataset, max_train_steps=8, checkpointing_steps=2,
                 checkpoints_total_limit=2))
    found = ckpt.find(_cfg(tmp_path, tiny_sd15, sample_dataset))
    assert [c.step for c in found] == [4, 6]
    assert not [p for p in found[0].path.parent.iterdir() if ".partial" in p.name]


def test_non_finite_loss_stops_with_step_and_keeps_last_checkpoint(tmp_path, tiny_sd15, sample_dataset, monkeypatch):
    real = Trainer._micro_step
    calls = {"n": 0}

    def poisoned(self):
        calls["n"] += 1
        loss, parts = real(self)
        return (loss * float("nan") if calls["n"] == 5 else loss), parts

    monkeypatch.setattr(Trainer, "_micro_step", poisoned)
    with pytest.raises(TrainingFailed, match="loss became nan at step 5") as e:
        run_job(_cfg(tmp_path, tiny_sd15, sample_dataset, max_train_steps=8, checkpointing_steps=2))
    assert "learning_rate" in str(e.value)
    assert not (tmp_path / "loras").exists()
    assert [c.step for c in ckpt.find(_cfg(tmp_path, tiny_sd15, sample_dataset))] == [2, 4]
    record = json.loads(next((tmp_path / "jobs").glob("*.json")).read_text())
    assert record["status"] == "failed" and "step 5" in record["message"]


def test_fp16_nan_names_the_likely_cause(tmp_path, tiny_sd15, sample_dataset, monkeypatch):
    monkeypatch.setattr(Trainer, "_micro_step", lambda self: (torch.tensor(float("inf"), requires_grad=True), {}))
    cfg = _cfg(tmp_path, tiny_sd15, sample_dataset, max_train_steps=2)
    cfg.mixed_precision = "fp16"  # bypass the CPU check: only the message is under test
    monkeypatch.setattr("trainer.job.make_accelerator", lambda c, *a: __import__("accelerate").Accelerator(cpu=True))
    with pytest.raises(TrainingFailed, match="fp16 overflows easily"):
        run_job(cfg)


def test_out_of_memory_gives_the_numbers_and_what_to_lower(tmp_path, tiny_sd15, sample_dataset, monkeypatch):
    def oom(self):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Trainer, "_micro_step", oom)
    with pytest.raises(TrainingFailed) as e:
        run_job(_cfg(tmp_path, tiny_sd15, sample_dataset, train_batch_size=4, resolution=64))
    msg = str(e.value)
    assert "Out of GPU memory at step 1" in msg and "batch 4" in msg and "resolution 64" in msg
    assert "train_batch_size 4 → 2" in msg and "gradient_checkpointing on" in msg
    assert not (tmp_path / "loras").exists()


def test_disk_full_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    target = tmp_path / "job.json"
    write_json_atomic(target, {"v": 1}, overwrite=False)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("pathlib.Path.write_text", full)
    with pytest.raises(ExportError, match="free disk space"):
        write_json_atomic(target, {"v": 2}, overwrite=True)
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.json"]  # no temp file left

    # the LoRA writer: the full disk strikes mid-file; nothing appears under the final name
    folder = tmp_path / "loras"
    save_lora(folder, "style", {"a.lora_down.weight": torch.zeros(2, 2)}, {}, {})
    before = (folder / "style.safetensors").read_bytes()

    def half_then_full(tensors, metadata):
        yield b"\0" * 8
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("trainer.export.safetensors_bytes", half_then_full)
    with pytest.raises(ExportError, match="No space left"):
        save_lora(folder, "style", {"a.lora_down.weight": torch.ones(2, 2)}, {}, {})
    assert (folder / "style.safetensors").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["style.adapter_config.json", "style.safetensors"]


@pytest.mark.parametrize("raw,expected", [
    ("my style", "my_style"), ("../../etc/passwd", "etc_passwd"), ("a/b\\c", "a_b_c"), ("CON", "lora_CON"),
    ("nul.txt", "lora_nul.txt"), ("", "lora"), ("..", "lora"), ("aquarell_fuchs", "aquarell_fuchs"),
    ("Fuchs äöü", "Fuchs_äöü"), ("x.safetensors", "x"), ("a" * 300, "a" * 100),
])
def test_names_are_sanitised(raw, expected):
    assert sanitize_name(raw) == expected


def test_existing_name_gets_a_suffix_never_overwritten(tmp_path):
    folder = tmp_path / "loras"
    p1, _ = save_lora(folder, "x", {"k": torch.zeros(1)}, {}, {})
    p2, _ = save_lora(folder, "x", {"k": torch.ones(1)}, {}, {})
    p3, _ = save_lora(folder, "../x", {"k": torch.ones(1)}, {}, {})
    assert [p.name for p in (p1, p2, p3)] == ["x.safetensors", "x_2.safetensors", "x_3.safetensors"]
    assert load_file(str(p1))["k"].item() == 0
    assert tree(tmp_path) == {"loras", "loras/x.safetensors", "loras/x_2.safetensors", "loras/x_3.safetensors",
                              "loras/x.adapter_config.json", "loras/x_2.adapter_config.json",
                              "loras/x_3.adapter_config.json"}


def test_previews_at_requested_steps_with_safety_terms(tmp_path, tiny_sd15, sample_dataset, monkeypatch):
    monkeypatch.setenv("LORA_STUDIO_SAFETY_NEGATIVE_TERMS", "operator term")
    seen = []
    cfg = _cfg(tmp_path, tiny_sd15, sample_dataset, max_train_steps=6, preview_every=3, preview_sampling_steps=2,
               preview_prompts=["wcfox fox portrait", "wcfox fox at night"], negative_prompt="blurry, low quality",
               bias_check_prompts=["a person", "an old person", "a child"])
    res = run_job(cfg, Callbacks(on_preview=lambda step, images, prompts, neg: seen.append((step, len(images),
                                                                                            prompts, neg))))
    assert [s[0] for s in seen] == [3, 6, 6]  # every 3 steps, then the bias-check grid at the end
    for _, n, prompts, neg in seen:
        assert n == len(prompts)
        assert neg.startswith("blurry, low quality")
        for term in ("nsfw", "violence", "operator term"):
            assert term in neg
    folder = tmp_path / "jobs" / res.record["id"] / "previews"
    assert len(list(folder.glob("preview-step000003-*.png"))) == 2
    assert (tmp_path / "jobs" / res.record["id"] / "bias_check_grid.png").is_file()


def test_kill_during_checkpoint_save_leaves_last_complete_one(tmp_path, tiny_sd15, sample_dataset):
    """A SIGKILL mid-save: the earlier checkpoint still loads, nothing partial sits under a final name."""
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path / "jobs" / "checkpoints" / "tiny"
    cfg = tiny_overrides(tmp_path, tiny_sd15, sample_dataset, max_train_steps=6, checkpointing_steps=2,
                         preview_every=-1)
    script = tmp_path / "child.py"
    script.write_text(f"""
import sys, time, json, torch
sys.path.insert(0, {str(os.getcwd())!r}); sys.path.insert(0, {str(os.path.dirname(__file__))!r})
torch.set_num_threads(1)
import trainer.checkpoint as ck
real = ck._save_torch
def slow(path, obj):
    real(path, obj)
    if "step-000004" in str(path.parent):
        print("SAVING", flush=True); time.sleep(60)
ck._save_torch = slow
from trainer import TrainConfig
from trainer.job import run_job
run_job(TrainConfig.from_dict(json.loads({json.dumps(json.dumps(cfg))})))
""")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    deadline = time.time() + 240
    for line in proc.stdout:
        if "SAVING" in line or time.time() > deadline:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    found = ckpt.find(TrainConfig.from_dict(cfg))
    assert [c.step for c in found] == [2]
    tensors, optim, rng = ckpt.load(found[0])
    assert tensors and "optimizer" in optim
    assert not list(root.rglob("step-000004"))  # the half-written one is only a hidden .partial folder
    assert not (tmp_path / "loras").exists()


def test_lora_on_another_base_is_named(tmp_path, tiny_sd15, tiny_sdxl, sample_dataset, capsys):
    from trainer.cli import main

    res = run_job(_cfg(tmp_path, tiny_sd15, sample_dataset, max_train_steps=1))
    assert main(["check", "--lora", str(res.lora_path), "--base", str(tiny_sd15)]) == 0
    assert "was trained on tiny-sd15" in capsys.readouterr().out
    assert main(["check", "--lora", str(res.lora_path), "--base", str(tiny_sdxl)]) == 1
    out = capsys.readouterr().out
    assert "trained on 'tiny-sd15'" in out and "applied to 'tiny-sdxl'" in out and "same base model" in out


def test_kill_during_the_final_save_leaves_no_file_under_a_final_name(tmp_path, tiny_sd15, sample_dataset):
    import signal
    import subprocess
    import sys

    first = run_job(_cfg(tmp_path, tiny_sd15, sample_dataset, max_train_steps=2))  # an earlier LoRA of this name
    cfg = tiny_overrides(tmp_path, tiny_sd15, sample_dataset, max_train_steps=2, preview_every=-1)
    script = tmp_path / "child.py"
    script.write_text(f"""
import sys, time, json, torch
sys.path.insert(0, {str(os.getcwd())!r})
torch.set_num_threads(1)
import trainer.export as ex
real = ex.safetensors_bytes
def slow(tensors, metadata):
    for i, chunk in enumerate(real(tensors, metadata)):
        yield chunk
        if i == 1 and "ss_network_dim" in metadata:  # the LoRA itself, half written
            print("SAVING", flush=True); time.sleep(60)
ex.safetensors_bytes = slow
from trainer import TrainConfig
from trainer.job import run_job
run_job(TrainConfig.from_dict(json.loads({json.dumps(json.dumps(cfg))})))
""")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    for line in proc.stdout:
        if "SAVING" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    names = sorted(p.name for p in (tmp_path / "loras").iterdir())
    assert "tiny.safetensors" in names and "tiny_2.safetensors" not in names, names
    assert load_file(str(first.lora_path))  # the earlier file is whole
    assert all(n.startswith(".") and n.endswith(".partial") for n in names
               if n not in ("tiny.safetensors", "tiny.adapter_config.json")), names
