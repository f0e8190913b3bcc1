"""The run/process classes through the nodes' own functions (without a ComfyUI server: its folders are
pointed at tmp): Train LoRA with exact floats and bad values in its config, Save LoRA into a folder that
is a file and onto a disk that fills up after the LoRA is written."""
from __future__ import annotations

import importlib
import json

import pytest
import torch
from conftest import load_nodes, tiny_overrides
from data_fixtures import snapshot


@pytest.fixture(scope="module")
def pack():
    return load_nodes()  # the V3 nodes need ComfyUI's comfy_api; skipped, saying why, without it


@pytest.fixture
def studio(pack, tmp_path, monkeypatch):
    train = importlib.import_module("lora_studio_pack.nodes.train")
    save = importlib.import_module("lora_studio_pack.nodes.save")
    monkeypatch.setattr(train, "studio_dir", lambda *parts: tmp_path.joinpath("studio", *parts))
    monkeypatch.setattr(save, "loras_dir", lambda: tmp_path / "loras")
    monkeypatch.setattr(save, "refresh_lora_list", lambda: None)
    monkeypatch.setenv("LORA_STUDIO_ALLOWED_ROOTS", str(tmp_path))  # the datasets here stand for the input folder
    return train, save


def _config(tmp_path, base, data, **kw):
    cfg = tiny_overrides(tmp_path, base, data, **dict(dict(max_train_steps=2, preview_every=-1, report_to=[]), **kw))
    return {k: v for k, v in cfg.items() if k not in ("dataset", "trigger_token", "jobs_dir", "cache_dir")}


def _dataset(data):
    return {"root": str(data), "trigger_token": "wcfox", "placeholder": "<my_token>"}


def test_train_node_takes_exact_floats_as_their_int(studio, tmp_path, tiny_sd15, sample_dataset):
    train, _ = studio
    cfg = _config(tmp_path, tiny_sd15, sample_dataset, rank=4.0, train_batch_size=1.0, seed=3.0,
                  gradient_accumulation_steps=2.0, checkpoints_total_limit=1.0, checkpointing_steps=1)
    out = train.TrainLoRA.execute(_dataset(sample_dataset), cfg)
    lora = out.result[0]
    assert lora["adapter_config"]["rank"] == 4 and type(lora["adapter_config"]["rank"]) is int


@pytest.mark.parametrize("field,value", [("max_train_steps", "abc"), ("rank", 2.5), ("seed", "x")])
def test_train_node_names_a_bad_value_before_anything_runs(studio, tmp_path, tiny_sd15, sample_dataset, field,
                                                           value):
    train, _ = studio
    before = snapshot(tmp_path)
    with pytest.raises(Exception, match=f"{field} = {value!r} is invalid") as e:
        train.TrainLoRA.execute(_dataset(sample_dataset), _config(tmp_path, tiny_sd15, sample_dataset,
                                                                  **{field: value}))
    assert type(e.value).__name__ == "ConfigError"
    assert snapshot(tmp_path) == before


def _lora():
    return {"tensors": {"lora_unet_x.alpha": torch.tensor(1.0)}, "metadata": {}, "adapter_config": {"rank": 1},
            "record": {"id": "r"}, "record_path": "", "name": "mine"}


def test_save_node_into_a_folder_that_is_a_file(studio, tmp_path):
    _, save = studio
    (tmp_path / "loras").write_text("a file where the LoRA folder should be")
    before = snapshot(tmp_path)
    with pytest.raises(Exception, match="is a file, not a folder") as e:
        save.SaveLoRAToModels.execute(_lora())
    assert type(e.value).__name__ == "ExportError"
    assert snapshot(tmp_path) == before


def test_save_node_when_the_record_cannot_be_written_still_reports_the_lora(studio, tmp_path, monkeypatch):
    _, save = studio
    real = save.write_json_atomic
    errors = importlib.import_module("lora_studio_pack.trainer.errors")

    def full(path, data, *a, **k):
        if str(path).endswith(".job.json"):
            raise errors.ExportError(f"Could not write '{path}': No space left on device.")
        return real(path, data, *a, **k)

    monkeypatch.setattr(save, "write_json_atomic", full)
    out = save.SaveLoRAToModels.execute(_lora())
    assert out.result == ("mine.safetensors",)
    assert any("No space left" in t and "LoRA is saved" in t for t in out.ui["text"])
    assert sorted(p.name for p in (tmp_path / "loras").iterdir()) == ["mine.adapter_config.json", "mine.safetensors"]


def test_save_node_never_leaves_a_lora_without_its_config(studio, tmp_path, monkeypatch):
    _, save = studio
    atomic = importlib.import_module("lora_studio_pack.trainer.atomic")
    errors = importlib.import_module("lora_studio_pack.trainer.errors")
    real = atomic.commit

    def commit(tmp, path, overwrite):
        if str(path).endswith(".safetensors"):
            raise errors.ExportError("Could not write: No space left on device")
        return real(tmp, path, overwrite)

    monkeypatch.setattr(atomic, "commit", commit)
    with pytest.raises(Exception, match="No space left"):
        save.SaveLoRAToModels.execute(_lora())
    assert not (tmp_path / "loras").exists() or list((tmp_path / "loras").iterdir()) == []
    json.dumps(_lora()["record"])  # the record was not changed in place
