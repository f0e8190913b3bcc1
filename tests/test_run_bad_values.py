"""Values of the wrong form, from every entry (CLI --set, job JSON, Configure LoRA's widgets and `extra`):
an exact value in another numeric form (4.0 for 4) is taken as the field's declared type and the run
works to the end; anything else is refused up front, naming the field and its range — never a raw
int() error or a crash in the middle of a run."""
from __future__ import annotations

import json

import pytest
from conftest import tiny_overrides
from data_fixtures import snapshot
from safetensors.torch import load_file

from trainer import TrainConfig
from trainer.cli import main

# field -> an integer-valued float that used to pass validation and then crash (or misbehave) mid-run
FLOATS = {"rank": 4.0, "resolution": 64.0, "train_batch_size": 1.0, "gradient_accumulation_steps": 2.0,
          "seed": 4.0, "checkpoints_total_limit": 1.0}


@pytest.fixture
def configure(nodes, with_checkpoint):
    """Configure LoRA without ComfyUI (conftest.with_checkpoint): run it, or only its validation."""
    base = dict(ckpt_name="v1-5.safetensors", preset="Atelier – Detailtreue", name="x")

    def run(**kw):
        return nodes.ConfigureLoRA.execute(**dict(base, **kw)).result[0]

    def validate(**kw):
        return nodes.ConfigureLoRA.validate_inputs(**dict(base, **kw))

    return run, validate


# ------------------------------------------------------------------ exact floats become the declared int (18)
def _cli_config(tmp_path, argv):
    import argparse

    from trainer.cli import build_config

    ns = argparse.Namespace(job=None, demo=False, preset="fotostudio", set=argv, base_model="x.safetensors",
                            dataset=None, trigger=None, output_dir=None, jobs_dir=None, name=None)
    return build_config(ns)


@pytest.mark.parametrize("name", FLOATS)
def test_exact_float_from_cli_set_is_the_declared_int(tmp_path, name):
    v = FLOATS[name]
    extra = ["test_mode=true"] if name == "resolution" else []
    cfg = _cli_config(tmp_path, [f"{name}={v}"] + extra)
    assert getattr(cfg, name) == int(v) and type(getattr(cfg, name)) is int


@pytest.mark.parametrize("name", FLOATS)
def test_exact_float_from_job_json_is_the_declared_int(tmp_path, name):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({name: FLOATS[name], "test_mode": True, "lr_warmup_steps": 0}))
    cfg = TrainConfig.load(job).validate()
    assert type(getattr(cfg, name)) is int


@pytest.mark.parametrize("name", FLOATS)
def test_exact_float_from_configure_extra_is_the_declared_int(configure, name):
    run, validate = configure
    extra = json.dumps({name: FLOATS[name], "test_mode": True})
    assert validate(extra=extra) is True
    assert type(run(extra=extra)[name]) is int


def test_a_run_with_every_exact_float_trains_to_the_end(tmp_path, tiny_sd15, sample_dataset, capsys):
    """Through the CLI, as --set values: checkpoints_total_limit=1.0 used to crash at the first checkpoint."""
    job = tmp_path / "job.json"
    job.write_text(json.dumps(tiny_overrides(tmp_path, tiny_sd15, sample_dataset, max_train_steps=4,
                                             preview_every=-1, report_to=[], checkpointing_steps=1)))
    sets = [a for k, v in FLOATS.items() for a in ("--set", f"{k}={v}")]
    assert main(["train", "--job", str(job), *sets]) == 0, capsys.readouterr()
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    [lora] = (tmp_path / "loras").glob("*.safetensors")
    assert any(t.shape[0] == 4 for k, t in load_file(str(lora)).items() if k.endswith("lora_down.weight"))
    ckpts = list((tmp_path / "jobs").rglob("step-*"))
    assert len(ckpts) == 1  # checkpoints_total_limit 1 kept exactly one


# ------------------------------------------------------------------ values that are no number: named (11)
BAD = [("max_train_steps", "abc", "an integer from 1"), ("rank", 4.5, "an integer from 1"),
       ("seed", -1, "an integer from 0"), ("train_batch_size", "two", "an integer from 1"),
       ("learning_rate", "fast", "a number from"), ("resolution", [512], "an integer from")]


@pytest.mark.parametrize("name,value,allowed", BAD)
def test_bad_value_in_job_json_names_the_field(tmp_path, capsys, name, value, allowed):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({name: value}))
    before = snapshot(tmp_path)
    assert main(["train", "--job", str(job), "--base-model", "x.safetensors"]) == 2
    out, err = capsys.readouterr()
    assert f"{name} = {value!r} is invalid" in err and allowed in err and "Traceback" not in out + err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("widget", ["max_train_steps", "rank", "learning_rate"])
def test_api_text_for_a_number_widget_names_the_field(configure, widget):
    """Through the API a prompt can carry "abc" for an INT widget: was `invalid literal for int()`."""
    run, validate = configure
    msg = validate(**{widget: "abc"})
    assert isinstance(msg, str) and f"{widget} = 'abc' is invalid" in msg and "Fix:" in msg
    with pytest.raises(Exception, match=f"{widget} = 'abc'") as e:  # the pack's own ConfigError class
        run(**{widget: "abc"})
    assert type(e.value).__name__ == "ConfigError"


def test_api_text_holding_a_number_is_that_number(configure):
    run, _ = configure
    cfg = run(max_train_steps="1500", learning_rate="2e-5")
    assert cfg["max_train_steps"] == 1500 and cfg["learning_rate"] == 2e-5


def test_extra_with_a_bad_value_names_the_field(configure):
    _, validate = configure
    msg = validate(extra='{"max_train_steps": "abc", "rank": 2.5}')
    assert "max_train_steps = 'abc'" in msg and "rank = 2.5" in msg


def test_cli_set_of_a_text_field_keeps_the_text(tmp_path):
    cfg = _cli_config(tmp_path, ["class_prompt=1984", "name=true"])
    assert cfg.class_prompt == "1984" and cfg.name == "true"


def test_cli_set_without_equals_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--set", "rank", "--base-model", "x.safetensors"]) == 2
    assert "--set = 'rank' is invalid: allowed key=value" in capsys.readouterr().err
