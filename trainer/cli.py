"""The same job headless: `python -m trainer train …` or `accelerate launch -m trainer train …`.

    python -m trainer train --job jobs/20261127-my_lora.json
    python -m trainer train --preset atelier --base-model sd15.safetensors --dataset data/my_concept \
        --trigger sks --output-dir ComfyUI/models/loras --set max_train_steps=1500 --set rank=16
    python -m trainer train --demo            # the tiny random demo model: checks the set-up, no real LoRA
    python -m trainer presets                 # the three presets and every field
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .config import TrainConfig, field_names, field_table, field_type
from .errors import ConfigError, LoraStudioError, Problem, TrainingCancelled
from .presets import PRESETS, apply_preset

log = logging.getLogger("lora_studio.cli")

DEMO_DATASET = Path(__file__).resolve().parent.parent / "example_data" / "watercolor_fox"


def _parse_value(key: str, raw: str):
    """--set values read by the field's declared type: a text field keeps the text as typed
    (`--set class_prompt=1984` stays "1984"); others are JSON, or text when they are not JSON."""
    if key in field_names() and field_type(key) == "str":
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw  # plain strings need no quotes: --set lr_scheduler=cosine


def build_config(args: argparse.Namespace) -> TrainConfig:
    overrides: dict = {}
    for item in args.set or []:
        if "=" not in item:
            raise ConfigError([Problem("--set", item, "key=value", "write e.g. --set rank=16; `presets` lists "
                                       "every key")])
        k, v = item.split("=", 1)
        overrides[k.strip()] = _parse_value(k.strip(), v)
    for flag, key in (("base_model", "base_model"), ("dataset", "dataset"), ("trigger", "trigger_token"),
                      ("output_dir", "output_dir"), ("jobs_dir", "jobs_dir"), ("name", "name")):
        if getattr(args, flag, None):
            overrides[key] = getattr(args, flag)
    if not args.demo and not args.job and not overrides.get("base_model"):
        print("No --base-model given: using the built-in TINY RANDOM DEMO model. It checks the set-up end to end; "
              "its LoRA is not usable for pictures. Name a checkpoint (--base-model path/to/sd15.safetensors) "
              "for a real LoRA.", flush=True)
        args.demo = True
    if args.demo:
        from .models import build_tiny_model

        cache = Path(args.jobs_dir or "runs/jobs").expanduser().parent / "demo-model"
        overrides.setdefault("base_model", str(build_tiny_model(cache / "tiny-sd15", "sd15")))
        overrides.setdefault("dataset", str(DEMO_DATASET))
        overrides.setdefault("trigger_token", "wcfox")
        overrides.setdefault("name", "demo_tiny_lora")
        for k, v in dict(resolution=64, test_mode=True, max_train_steps=30, lr_warmup_steps=3,
                         gradient_accumulation_steps=1, learning_rate=1e-3).items():
            overrides.setdefault(k, v)
    if args.job:
        data = TrainConfig.load(args.job).to_dict()
        data.update(overrides)
        return TrainConfig.from_dict(data).validate()
    return apply_preset(args.preset, overrides)


def _print_progress(info) -> None:
    every = max(1, info.total // 20)
    if info.step == 1 or info.step % every == 0 or info.step == info.total:
        print(f"step {info.step}/{info.total}  loss {info.loss:.4f}  lr {info.lr:.2e}  "
              f"eta {info.eta_s:.0f}s", flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    from .checkpoint import AlreadyFinished
    from .commands import resume_command
    from .interrupt import StopOnSignal
    from .job import run_job
    from .loop import Callbacks

    cfg = build_config(args)
    with StopOnSignal() as stop:  # Ctrl-C / SIGTERM: stop after this step, keep a checkpoint
        try:
            # messages arrive through the lora_studio logger
            result = run_job(cfg, Callbacks(on_step=_print_progress, should_stop=stop.requested))
        except AlreadyFinished as e:
            print(f"nothing to do: {e}")
            return 0
        except TrainingCancelled as e:
            print(f"stopped: {e}", file=sys.stderr)
            ck = getattr(e, "checkpoint", None)
            record = getattr(e, "record_path", None)
            if ck and record:
                print(f"checkpoint: {ck}\nto continue, run:\n  {resume_command(record, ck)}", file=sys.stderr)
            return stop.exit_code if stop.requested() else 130
    if result.record_error:
        print(f"warning: {result.record_error}", file=sys.stderr)
    if result.lora_path:
        m = result.record["metrics"]
        print(f"LoRA written: {result.lora_path}\njob record: {result.record_path}\n"
              f"held-out loss {m['eval_loss_before']:.4f} -> {m['eval_loss_after']:.4f}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Is this LoRA meant for this base model? (The guide's "colour shifts: wrong base model" row.)"""
    from .export import base_mismatch_warning, read_lora_metadata
    from .job import file_sha256

    metadata = read_lora_metadata(Path(args.lora).expanduser())
    base = Path(args.base).expanduser()
    if not base.exists():
        raise LoraStudioError(f"--base '{args.base}' does not exist. Fix: name the checkpoint file or diffusers "
                              "folder you generate with.")
    if base.is_dir() and not (base / "unet").is_dir():
        raise LoraStudioError(f"--base '{args.base}' is a folder but not a diffusers model (no unet/ inside). "
                              "Fix: name the checkpoint file, or the diffusers folder itself.")
    warning = base_mismatch_warning(metadata, file_sha256(base), base.name)
    print(f"warning: {warning}" if warning else f"ok: {Path(args.lora).name} was trained on {base.name}")
    return 1 if warning else 0


def cmd_presets(_: argparse.Namespace) -> int:
    for p in PRESETS.values():
        print(f"{p.key:11s} {p.title}  ({p.suited_for}; >= {p.min_vram_gb} GB VRAM)\n            {p.focus}")
        print("            " + ", ".join(f"{k}={v}" for k, v in p.values.items()))
    print("\nfields (override with --set key=value):")
    groups: dict[str, list] = {}
    for name, f in field_table().items():  # the config's own definitions: type, default, range, help
        groups.setdefault(f["group"], []).append((name, f))
    for group, rows in groups.items():
        print(f"\n  [{group}]")
        for name, f in rows:
            _print_field(name, f)
    return 0


def _print_field(name: str, f: dict) -> None:
    allowed = f", {f['min']:g}..{f['max']:g}" if "min" in f else ""
    allowed += f", one of {', '.join(f['choices'])}" if "choices" in f else ""
    print(f"  {name} ({f['type']}{allowed}; default {json.dumps(f['default'], ensure_ascii=False)})\n      {f['help']}")


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is now (not the stream of the first call: main() may run many times in
    one process, e.g. under a test runner or a wrapper that redirects output)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def main(argv: list[str] | None = None) -> int:
    # Our own messages plainly at INFO; other libraries only when they warn.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ours = logging.getLogger("lora_studio")
    if not ours.handlers:
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        ours.addHandler(handler)
        ours.setLevel(logging.INFO)
        ours.propagate = False
    ap = argparse.ArgumentParser(prog="python -m trainer", description="LoRA Studio headless trainer")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train one LoRA")
    t.add_argument("--job", help="job JSON (a config, or a job record from an earlier run)")
    t.add_argument("--preset", default="fotostudio", help=f"one of {', '.join(PRESETS)} (ignored with --job)")
    t.add_argument("--base-model", dest="base_model", help="checkpoint file or diffusers folder")
    t.add_argument("--dataset", help="dataset folder")
    t.add_argument("--trigger", help="trigger token replacing <my_token> in prompts")
    t.add_argument("--output-dir", dest="output_dir", help="where the LoRA goes (e.g. ComfyUI/models/loras)")
    t.add_argument("--jobs-dir", dest="jobs_dir", help="where job records go")
    t.add_argument("--name", help="LoRA file name")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config field")
    t.add_argument("--demo", action="store_true", help="use the built-in TINY RANDOM demo model and sample data")
    t.set_defaults(func=cmd_train)
    sub.add_parser("presets", help="list presets and fields").set_defaults(func=cmd_presets)
    c = sub.add_parser("check", help="check that a LoRA was trained on a base model (exit 1 if not)")
    c.add_argument("--lora", required=True, help="the LoRA .safetensors")
    c.add_argument("--base", required=True, help="the base checkpoint file or diffusers folder")
    c.set_defaults(func=cmd_check)
    args = ap.parse_args(argv)
    return run_guarded(args.func, args)


def run_guarded(func, args: argparse.Namespace) -> int:
    """Run a subcommand; whatever goes wrong, the person reads one clear message, never a traceback.

    Exit codes: 0 done, 1 a check found a problem, 2 bad input or an explained failure,
    3 an unexpected error (a bug: LORA_STUDIO_DEBUG=1 shows its traceback), 130/143 stopped by a signal.
    """
    try:
        return func(args)
    except LoraStudioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped at once (second Ctrl-C): no checkpoint of the current step was written.", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory. Fix: lower resolution or train_batch_size, or close other programs.",
              file=sys.stderr)
        return 2
    except OSError as e:
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"error: {e.strerror or e}{where}. Fix: check that the path exists and is readable/writable, "
              "and that the disk has free space.", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: say so plainly; the traceback only on request
        if os.environ.get("LORA_STUDIO_DEBUG"):
            raise
        print(f"internal error: {e.__class__.__name__}: {e}\nThis is a bug in LoRA Studio, not in your input. "
              "Run again with LORA_STUDIO_DEBUG=1 to see the traceback, and please report it.", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
