"""Configure LoRA's live command, built in the browser (web/lora_studio_command.js), runs the same job:
pasted into a shell and read by the real CLI it gives the config the node itself builds on the server."""
from __future__ import annotations

import argparse
import importlib
import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import load_nodes

from trainer.cli import build_config

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed: the web/ JS is not run")

CASES = [
    dict(preset="Fotostudio – Schnellstart", name="plain", mixed_precision="auto", seed=42),
    dict(preset="Galerie – Feinabstimmung", name="mein stil $(rm -rf ~) 'x'", rank=16, learning_rate=2e-5, seed=7,
         lr_scheduler="linear", mixed_precision="bf16", train_text_encoder="off", resolution=768, alpha=0.0,
         extra='{"unet_target_modules": ["to_q", "to_v"], "noise_offset": 0.05, "preview_prompts": ["1234", "true"],'
               ' "negative_prompt": "{\\"a\\": 1}"}'),
    dict(preset="Atelier – Detailtreue", name="prior", class_prompt="1984", num_class_images=80, seed=3,
         gradient_checkpointing="on", max_train_steps=1500, mixed_precision="no", extra='{"caption_dropout": 0.1}'),
]
DATA = {"dataset": "fox pics", "trigger_token": "1234", "placeholder": "<my_token>"}


def _js_commands(env: dict) -> list[dict]:
    table = json.loads((REPO / "web" / "presets.json").read_text(encoding="utf-8"))
    mod = (REPO / "web" / "lora_studio_command.js").as_uri()
    code = (f'import {{ buildCommand }} from "{mod}";\n'
            f"const table = {json.dumps(table)}, env = {json.dumps(env)}, data = {json.dumps(DATA)};\n"
            f"const cases = {json.dumps([dict(c, ckpt_name='v1-5.safetensors') for c in CASES])};\n"
            "console.log(JSON.stringify(cases.map((w) => buildCommand(table, env, w, data))));")
    r = subprocess.run(["node", "--input-type=module", "-e", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _cli_config(command: str, env: dict):
    cd, rest = command.split(" && ", 1)
    assert shlex.split(cd) == ["cd", env["cwd"]]
    argv = shlex.split(rest)
    n = len(env["cli"]) + 1
    assert argv[:n] == env["cli"] + ["train"], argv
    ap = argparse.ArgumentParser()
    for flag in ("--preset", "--name", "--base-model", "--dataset", "--output-dir", "--jobs-dir", "--trigger", "--job"):
        ap.add_argument(flag)
    ap.add_argument("--set", action="append")
    ap.add_argument("--demo", action="store_true")
    return build_config(ap.parse_args(argv[n:])).to_dict()


def test_the_browsers_command_runs_the_nodes_job(tmp_path, monkeypatch):
    load_nodes()  # the V3 nodes need ComfyUI's comfy_api; skipped, saying why, without it
    configure = importlib.import_module("lora_studio_pack.nodes.configure")
    ckpt = tmp_path / "models" / "v1-5 (pruned).safetensors"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"")
    monkeypatch.setattr(configure, "checkpoint_path", lambda name: str(ckpt))
    monkeypatch.setattr(configure, "loras_dir", lambda: tmp_path / "loras")
    monkeypatch.setattr(configure, "_auto_precision", lambda: "no")
    from trainer.commands import cli_argv

    cli, cwd = cli_argv()
    env = {"cli": cli, "cwd": str(cwd), "input_dir": str(tmp_path / "in put"), "output_dir": str(tmp_path / "loras"),
           "auto_precision": "no", "checkpoints": {"v1-5.safetensors": str(ckpt)}, "sep": "/"}
    for kw, js in zip(CASES, _js_commands(env)):
        assert js["error"] is None, js
        server = configure.make_config(dict(kw, ckpt_name="v1-5.safetensors")).to_dict()
        server.update(dataset=env["input_dir"] + "/" + DATA["dataset"], trigger_token=DATA["trigger_token"])
        pasted = _cli_config(js["command"], env)
        # the CLI makes relative folders absolute in the folder the command cd's into: the same folder
        same = {k for k in server if isinstance(server[k], str) and server[k] and not Path(server[k]).is_absolute()
                and pasted[k] == str(Path(env["cwd"]) / server[k])}
        diff = {k: (server[k], pasted[k]) for k in server if server[k] != pasted[k] and k not in same}
        assert diff == {}, (kw, js["command"], diff)
        assert pasted["trigger_token"] == "1234" and isinstance(pasted["trigger_token"], str)
