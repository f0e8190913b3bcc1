"""End to end through the CLI on a tiny random model: the loss falls, runs repeat bit for bit."""
from __future__ import annotations

import json

from conftest import tiny_overrides

from trainer.cli import main


def _cli(tmp_path, base, dataset, **extra):
    cfg = tiny_overrides(tmp_path, base, dataset, **extra)
    job = tmp_path / "job.json"
    job.write_text(json.dumps(cfg))
    assert main(["train", "--job", str(job)]) == 0
    records = sorted((tmp_path / "jobs").glob("*.json"))
    return json.loads(records[-1].read_text())


def test_cli_trains_and_held_out_loss_falls(tmp_path, tiny_sd15, sample_dataset):
    rec = _cli(tmp_path, tiny_sd15, sample_dataset)
    m = rec["metrics"]
    assert rec["status"] == "finished"
    assert len(m["losses"]) == 30
    # fixed (image, noise, timestep) triples, no SNR weighting: the same measurement before and after
    assert m["eval_loss_after"] < 0.8 * m["eval_loss_before"], (m["eval_loss_before"], m["eval_loss_after"])
    lora = rec["outputs"]["lora"]
    assert lora.endswith("tiny.safetensors")
    assert rec["base_model"]["family"] == "sd15" and len(rec["base_model"]["sha256"]) == 64
    assert rec["command"].startswith("accelerate launch -m trainer train --job")


def test_same_seed_gives_identical_files(tmp_path, tiny_sd15, sample_dataset):
    a = _cli(tmp_path, tiny_sd15, sample_dataset, max_train_steps=4, train_text_encoder=True)
    b = _cli(tmp_path, tiny_sd15, sample_dataset, max_train_steps=4, train_text_encoder=True)
    pa, pb = a["outputs"]["lora"], b["outputs"]["lora"]
    assert pa != pb  # never overwritten: the second run got a new name
    assert open(pa, "rb").read() == open(pb, "rb").read()
