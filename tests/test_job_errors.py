"""Bad input to a job: its own clear error, and nothing written anywhere."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_overrides, tree
from safetensors.torch import save_file

from trainer import ConfigError, DatasetError, ModelLoadError, TrainConfig
from trainer.cli import main
from trainer.job import run_job


def _run_expecting(tmp_path, exc, match, **cfg):
    before = tree(tmp_path)
    with pytest.raises(exc, match=match):
        run_job(TrainConfig.from_dict(cfg))
    assert tree(tmp_path) == before, "a failed job wrote files"


def test_missing_dataset(tmp_path, tiny_sd15):
    _run_expecting(tmp_path, DatasetError, "Dataset folder not found",
                   **tiny_overrides(tmp_path, tiny_sd15, tmp_path / "no_such_folder"))


def test_empty_dataset(tmp_path, tiny_sd15):
    (tmp_path / "empty" / "images").mkdir(parents=True)
    _run_expecting(tmp_path, DatasetError, "(?i)no (usable )?training images", **tiny_overrides(tmp_path, tiny_sd15, tmp_path / "empty"))


def test_unsupported_checkpoint(tmp_path, sample_dataset):
    save_file({"model.diffusion_model.joint_blocks.0.x_block.mlp.fc1.weight": torch.zeros(1)},
              str(tmp_path / "sd3.safetensors"))
    _run_expecting(tmp_path, ModelLoadError, "SD 3",
                   **tiny_overrides(tmp_path, tmp_path / "sd3.safetensors", sample_dataset))


def test_invalid_config(tmp_path, tiny_sd15, sample_dataset):
    _run_expecting(tmp_path, ConfigError, "lr_scheduler", **tiny_overrides(tmp_path, tiny_sd15, sample_dataset,
                                                                           lr_scheduler="warp"))


def test_cli_prints_the_message_and_exits_2(tmp_path, tiny_sd15, capsys):
    job = tmp_path / "job.json"
    job.write_text(json.dumps(tiny_overrides(tmp_path, tiny_sd15, tmp_path / "missing")))
    before = tree(tmp_path)
    assert main(["train", "--job", str(job)]) == 2
    assert "Dataset folder not found" in capsys.readouterr().err
    assert tree(tmp_path) == before


def test_fp16_on_cpu_is_refused_before_anything_is_written(tmp_path, tiny_sd15, sample_dataset):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: fp16 is allowed there")
    _run_expecting(tmp_path, ConfigError, "fp16", **tiny_overrides(tmp_path, tiny_sd15, sample_dataset,
                                                                   mixed_precision="fp16"))
