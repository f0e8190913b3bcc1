"""The node adapters without ComfyUI: server-side validation messages and the headless command."""
from __future__ import annotations

import importlib
import shlex
from pathlib import Path

import pytest
from conftest import load_pack

from trainer.cli import build_config


@pytest.fixture(scope="module")
def nodes():
    load_pack()
    return importlib.import_module("lora_studio_pack.nodes")


@pytest.fixture
def with_checkpoint(nodes, monkeypatch, tmp_path):
    ckpt = tmp_path / "v1-5.safetensors"
    ckpt.write_bytes(b"")
    configure = importlib.import_module("lora_studio_pack.nodes.configure")
    monkeypatch.setattr(configure, "checkpoint_names", lambda: ["v1-5.safetensors"])
    monkeypatch.setattr(configure, "checkpoint_path", lambda name: str(ckpt))
    monkeypatch.setattr(configure, "loras_dir", lambda: tmp_path / "loras")
    return ckpt


def test_validate_inputs_returns_the_trainers_message(nodes, with_checkpoint):
    v = nodes.ConfigureLoRA.VALIDATE_INPUTS
    ok = dict(ckpt_name="v1-5.safetensors", preset="Atelier – Detailtreue", name="x")
    assert v(**ok) is True
    msg = v(**dict(ok, learning_rate=5e-7))
    assert "learning_rate" in msg and "Fix:" in msg and "1e-06" in msg
    msg = v(**dict(ok, resolution=64))
    assert "resolution" in msg and "256" in msg
    msg = v(**dict(ok, extra='{"noise_offset": 0.05, "snr_gamma": -1}'))
    assert "snr_gamma" in msg
    assert "JSON" in v(**dict(ok, extra="{broken"))
    assert "not one of" in v(**dict(ok, ckpt_name="missing.safetensors"))
    assert "not one of" in v(**dict(ok, train_text_encoder="maybe"))


def test_headless_command_rebuilds_the_same_config(nodes, with_checkpoint, monkeypatch):
    out = nodes.ConfigureLoRA().configure(ckpt_name="v1-5.safetensors", preset="Galerie – Feinabstimmung",
                                          name="mein stil", rank=16, learning_rate=2e-5, seed=7,
                                          lr_scheduler="linear", mixed_precision="no",
                                          extra='{"unet_target_modules": ["to_q", "to_v"], "noise_offset": 0.05}')
    config, command = out["result"]
    assert out["ui"]["command"] == [command]
    cd, rest = command.split("&&", 1)
    folder = shlex.split(cd)[1]
    argv = shlex.split(rest)
    assert argv[1:4] == ["-m", "trainer", "train"]  # <python> -m trainer train, run in the pack's folder
    from trainer.cli import PATH_FIELDS, parser

    args = parser().parse_args(argv[3:])
    monkeypatch.chdir(folder)  # relative paths mean what they mean after the command's `cd`
    rebuilt = build_config(args).to_dict()
    for key, value in config.items():
        if key in PATH_FIELDS and value and not Path(value).is_absolute():
            value = str(Path(folder) / value)
        if key != "dataset":
            assert rebuilt[key] == value, key


def test_class_prompt_turns_prior_preservation_on(nodes, with_checkpoint):
    config, _ = nodes.ConfigureLoRA().configure(ckpt_name="v1-5.safetensors", preset="Fotostudio – Schnellstart",
                                                name="x", class_prompt="portrait of a person",
                                                num_class_images=80)["result"]
    assert config["with_prior_preservation"] and config["class_prompt"] == "portrait of a person"
    assert config["num_class_images"] == 80


def test_every_input_has_a_tooltip_and_every_node_a_description(nodes):
    for cls in nodes.NODE_CLASS_MAPPINGS.values():
        assert cls.DESCRIPTION and cls.CATEGORY == "LoRA Studio"
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, (kind, opts) in spec.get(section, {}).items():
                assert opts.get("tooltip"), f"{cls.__name__}.{name}"
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)


def test_node_ids_are_prefixed_and_clash_with_no_core_node(nodes):
    core = {"TrainLoraNode", "SaveLoRA", "LoraModelLoader", "LossGraphNode", "LoadImageSetFromFolderNode",
            "LoraLoader", "LoraLoaderModelOnly"}
    assert all(k.startswith("LoraStudio_") for k in nodes.NODE_CLASS_MAPPINGS)
    assert not core & set(nodes.NODE_CLASS_MAPPINGS)
