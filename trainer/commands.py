"""Commands we print for people to copy: every one is built with shlex, so it runs as pasted.

A path holding spaces, quotes, `$(…)` or backticks stays one literal argument; nothing in a job
name, a dataset path or a record path is ever interpreted by the shell.

Installed with pip, the pack is the package `lora_studio` with the console command `lora-studio`; in a
checkout or a ComfyUI custom_nodes folder it is the top-level package `trainer` next to the pack's files,
run as `python -m trainer` from that folder. The printed command is the form that works on this machine.
"""
from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

PACK_DIR = Path(__file__).resolve().parent.parent  # the checkout / custom node folder (unused when installed)
SCRIPT = "lora-studio"


def shell_join(argv: list[str], cwd: str | Path | None = None) -> str:
    """`argv` as one shell line; with `cwd`, prefixed by `cd <cwd> &&` (relative paths keep their meaning)."""
    line = shlex.join([str(a) for a in argv])
    return f"cd {shlex.quote(str(cwd))} && {line}" if cwd is not None else line


def installed() -> bool:
    """True when this code runs as the pip-installed `lora_studio` package (not `trainer`, not `<pack>.trainer`)."""
    return __package__ == "lora_studio"


def _python() -> str:
    on_path = shutil.which("python")
    same = on_path is not None and Path(on_path).resolve() == Path(sys.executable).resolve()
    return "python" if same else sys.executable


def cli_argv() -> tuple[list[str], Path | None]:
    """How to start the CLI here, and the folder to start it in: `lora-studio`, or `python -m trainer` in the pack."""
    if installed():
        return ([SCRIPT] if shutil.which(SCRIPT) else [_python(), "-m", "lora_studio"]), None
    return [_python(), "-m", "trainer"], PACK_DIR


def accelerate_argv(mixed_precision: str = "no", processes: int = 1) -> tuple[list[str], Path | None]:
    """`accelerate launch` of the same CLI. Every value accelerate would otherwise guess (and warn about) is
    given, so it prints no "values were not passed" warning; on several GPUs raise --num_processes."""
    launch = ["accelerate", "launch", "--num_processes", str(processes), "--num_machines", "1",
              "--mixed_precision", mixed_precision, "--dynamo_backend", "no"] + (["--multi_gpu"] if processes > 1 else [])
    if installed():
        return launch + ["-m", "lora_studio"], None
    return launch + ["-m", "trainer"], PACK_DIR


def job_commands(record_path: Path | str, mixed_precision: str = "no") -> dict[str, str]:
    """The commands that rerun a recorded job; they give the same LoRA (the record pins threads and seeds)."""
    job = str(Path(record_path).expanduser().absolute())
    cli, cwd = cli_argv()
    acc, acc_cwd = accelerate_argv(mixed_precision)
    return {"rerun": shell_join(cli + ["train", "--job", job], cwd),
            "accelerate": shell_join(acc + ["train", "--job", job], acc_cwd),
            "resume": shell_join(cli + ["resume", job], cwd)}


def headless_command(record_path: Path | str) -> str:
    """The guide's copyable command: the same job, from a terminal (job_commands has the accelerate form)."""
    return job_commands(record_path)["rerun"]


def train_command(args: list[str]) -> str:
    """`<cli> train` with these arguments."""
    cli, cwd = cli_argv()
    return shell_join(cli + ["train", *args], cwd)


# Fields with a flag of their own; resume_from is how this one run starts, not the job (the CLI resumes by itself
# with `resume`), and num_threads is the machine's (the record pins it; a --job rerun keeps it).
_FLAGS = (("name", "--name"), ("base_model", "--base-model"), ("dataset", "--dataset"), ("trigger_token", "--trigger"),
          ("output_dir", "--output-dir"), ("jobs_dir", "--jobs-dir"))
_NOT_SET = {"preset", "resume_from", "num_threads", *(k for k, _ in _FLAGS)}


def config_argv(config: dict[str, Any]) -> list[str]:
    """`train` arguments that rebuild `config` (a TrainConfig's dict): its preset, the flagged fields that are set,
    and `--set key=value` for every other field that differs from the preset. Values are written the way the
    CLI reads them back (trainer.cli._parse_value): text fields as typed (so "1234" or "true" stay text),
    everything else as JSON."""
    from .config import field_type
    from .presets import apply_preset, get_preset

    key = get_preset(config.get("preset") or "").key
    base = apply_preset(key).to_dict()
    args = ["--preset", key]
    for field_name, flag in _FLAGS:
        if config.get(field_name) and (field_name != "jobs_dir" or config[field_name] != base[field_name]):
            args += [flag, str(config[field_name])]
    for k, v in config.items():
        if k in _NOT_SET or k not in base or base[k] == v:
            continue
        text = v if field_type(k) == "str" and isinstance(v, str) else json.dumps(v, ensure_ascii=False)
        args += ["--set", f"{k}={text}"]
    return args


def config_command(config: dict[str, Any]) -> str:
    """The one copyable line for a config (Configure LoRA's live command, its `command` output): shell-quoted,
    runnable as copied from any folder (it `cd`s into the pack where it must)."""
    return train_command(config_argv(config))


def resume_command(record_path: Path | str, checkpoint: Path | str) -> str:
    """The exact line that continues a stopped run: this job, this checkpoint."""
    return train_command(["--job", str(Path(record_path).absolute()),
                          "--set", f"resume_from={Path(checkpoint).absolute()}"])
