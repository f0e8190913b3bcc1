"""Configure LoRA's command has one builder, on the server (trainer.commands.config_command, asked for by the
browser through POST /lora_studio/command while the user edits): read back by the real CLI, the pasted line
gives the config Train LoRA itself runs. And the widgets show the preset's values: the node's defaults are the
default preset's, and older workflows' 0 / "preset" ("keep the preset's value") still give the same job."""
from __future__ import annotations

import importlib
import shlex
from pathlib import Path

import pytest
from conftest import load_nodes, point_configure_at

from trainer.cli import build_config, parser

CASES = [
    dict(preset="Fotostudio – Schnellstart", name="plain", mixed_precision="auto", seed=42),
    dict(preset="Galerie – Feinabstimmung", name="mein stil $(rm -rf ~) 'x'", rank=16, learning_rate=2e-5, seed=7,
         lr_scheduler="linear", mixed_precision="bf16", train_text_encoder="off", resolution=768, alpha=0.0,
         extra='{"unet_target_modules": ["to_q", "to_v"], "noise_offset": 0.05, "preview_prompts": ["1234", "true"],'
               ' "negative_prompt": "{\\"a\\": 1}", "class_data_dir": "", "bias_check_prompts": ["null"]}'),
    dict(preset="Atelier – Detailtreue", name="prior", class_prompt="1984", num_class_images=80, seed=3,
         gradient_checkpointing="on", max_train_steps=1500, mixed_precision="no",
         extra='{"caption_dropout": 0.1, "negative_prompt": "true"}'),
]
DATA = {"dataset": "fox pics", "trigger_token": "1234", "placeholder": "<tok>"}
# how this one run starts (Train LoRA's "resume: auto"), not the job; the CLI resumes with `resume`
NOT_THE_JOB = {"resume_from"}


@pytest.fixture
def configure(monkeypatch, tmp_path):
    load_nodes()  # the V3 nodes need ComfyUI's comfy_api; skipped, saying why, without it
    mod = importlib.import_module("lora_studio_pack.nodes.configure")
    ckpt = tmp_path / "models" / "v1-5 (pruned).safetensors"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"")
    (tmp_path / "input" / DATA["dataset"]).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # no ComfyUI folders in unit tests: input/ and output/ are the working folder's
    point_configure_at(monkeypatch, ckpt, tmp_path / "loras")
    monkeypatch.setattr(mod, "_auto_precision", lambda: "no")
    return mod


def cli_config(command: str, monkeypatch) -> dict:
    """The config the real CLI builds from a pasted `cd <pack> && <python> -m trainer train …` line."""
    cd, rest = command.split(" && ", 1)
    folder = shlex.split(cd)[1]
    argv = shlex.split(rest)
    i = argv.index("train")
    assert argv[:i][-2:] == ["-m", "trainer"], argv
    monkeypatch.chdir(folder)  # relative paths mean what they mean after the command's `cd`
    return build_config(parser().parse_args(argv[i:])).to_dict()


@pytest.mark.parametrize("kw", CASES, ids=["plain", "json-looking-texts", "prior"])
def test_the_live_command_runs_the_job_train_lora_runs(configure, monkeypatch, kw):
    live = configure.live_command(dict(kw, ckpt_name="v1-5.safetensors"), DATA)
    assert live["error"] is None, live
    want = live["config"]
    assert want["dataset"].endswith("fox pics") and want["trigger_token"] == "1234" and want["jobs_dir"], want
    got = cli_config(live["command"], monkeypatch)
    diff = {k: (want[k], got[k]) for k in want if k not in NOT_THE_JOB and want[k] != got[k]}
    assert diff == {}, (live["command"], diff)
    assert isinstance(got["trigger_token"], str) and got["placeholder"] == "<tok>"
    # settings equal to the preset's are not written: the line names only what the job changes
    assert ("--set rank=" in live["command"]) == ("rank" in live["overrides"])


def _set_keys(command: str) -> set[str]:
    argv = shlex.split(command.split(" && ", 1)[1])
    return {argv[i + 1].split("=", 1)[0] for i, a in enumerate(argv) if a == "--set"}


def test_a_value_equal_to_the_presets_is_no_override(configure):
    from trainer.presets import preset_widgets

    shown = dict(preset_widgets("atelier"), ckpt_name="v1-5.safetensors", preset="Atelier – Detailtreue", name="x")
    live = configure.live_command(shown, DATA)
    assert set(live["overrides"]) <= {"name", "placeholder"}, live["overrides"]
    # what Train LoRA sets from Load Dataset and the server, nothing of the preset's
    assert _set_keys(live["command"]) <= {"placeholder", "cache_dir", "tokenizer_dir"}, live["command"]
    changed = configure.live_command(dict(shown, rank=8), DATA)
    assert changed["overrides"]["rank"] == {"value": 8, "preset": 32} and "rank" in _set_keys(changed["command"])


def test_old_workflows_with_keep_the_preset_give_the_same_job(configure):
    """0 / "preset" are what workflows saved before the widgets showed the preset's values."""
    from trainer.presets import CONFIGURE_WIDGETS, preset_widgets, widget_kind

    for key, title in (("fotostudio", "Fotostudio – Schnellstart"), ("galerie", "Galerie – Feinabstimmung")):
        old = {n: (0 if widget_kind(n) == "number" else "preset") for n in CONFIGURE_WIDGETS
               if widget_kind(n) in ("number", "switch", "choice")}
        new = preset_widgets(key)
        common = dict(ckpt_name="v1-5.safetensors", preset=title, name="same", seed=42, mixed_precision="auto")
        a = configure.make_config(dict(common, **old)).to_dict()
        b = configure.make_config({**common, **new}).to_dict()
        assert a == b, {k: (a[k], b[k]) for k in a if a[k] != b[k]}
        assert configure.live_command(dict(common, **old), DATA)["command"] == \
            configure.live_command({**common, **new}, DATA)["command"]


def test_the_widgets_default_to_the_default_presets_values(configure):
    """Derived from the field and preset definitions, never typed again."""
    from trainer.presets import DEFAULT_PRESET, PRESETS, preset_widgets

    spec = importlib.import_module("lora_studio_pack.nodes").ConfigureLoRA.INPUT_TYPES()
    opts = {**spec["required"], **spec["optional"]}
    assert opts["preset"][1]["default"] == PRESETS[DEFAULT_PRESET].title
    for name, value in preset_widgets(DEFAULT_PRESET).items():
        assert opts[name][1]["default"] == value, name
        if "options" in opts[name][1]:
            assert value in opts[name][1]["options"], name
    assert opts["rank"][1]["default"] == PRESETS[DEFAULT_PRESET].values["rank"] != 0


def test_bad_values_come_back_as_a_message_not_a_command(configure):
    live = configure.live_command(dict(ckpt_name="v1-5.safetensors", preset="Atelier", name="x", rank=9999), DATA)
    assert live["command"] == "" and "rank" in live["error"] and "Fix:" in live["error"]
    live = configure.live_command(dict(ckpt_name="v1-5.safetensors", preset="Atelier", name="x"),
                                  dict(DATA, dataset="../../etc"))
    assert live["command"] == "" and live["error"]
    live = configure.live_command(dict(ckpt_name="", preset="Atelier", name="x"), DATA)  # as the templates come
    assert live["command"] == "" and "pick your base model" in live["error"], live


def test_the_nodes_command_output_is_the_same_builder(configure, monkeypatch):
    """Configure LoRA's `command` output has no dataset (Train LoRA adds it); otherwise the same line."""
    from trainer.commands import config_command

    kw = dict(CASES[1], ckpt_name="v1-5.safetensors")
    out = importlib.import_module("lora_studio_pack.nodes").ConfigureLoRA.execute(**kw)
    config, command = out.result
    assert command == config_command(config) and "--dataset" not in command
    got = cli_config(command, monkeypatch)
    # the CLI makes relative folders absolute in the folder the command cd's into
    got = {k: (config[k] if isinstance(config[k], str) and config[k] and not Path(config[k]).is_absolute()
               and got[k] == str(Path.cwd() / config[k]) else v) for k, v in got.items()}
    assert {k for k in config if config[k] != got[k]} <= {"dataset"}, command
    assert not (out.ui or {}).get("command"), "the panel's command is the live one, not this dataset-less line"


def test_the_one_builder(configure):
    """The browser renders the server's command; the old second builders are gone."""
    repo = Path(__file__).resolve().parents[1]
    assert not (repo / "web" / "lora_studio_command.js").exists()
    assert not hasattr(configure, "headless_command")
    js = (repo / "web" / "lora_studio.js").read_text(encoding="utf-8")
    assert '"/lora_studio/command"' in js and "shellQuote" not in js
