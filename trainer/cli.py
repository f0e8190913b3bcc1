"""The same job headless: `lora-studio …` (installed), `python -m trainer …` (checkout), `accelerate launch`.

    lora-studio train --dataset data/my_concept --trigger sks --base-model sd15.safetensors
    lora-studio train                           # the tiny random DEMO model on the sample data: checks the set-up
    lora-studio train --job runs/jobs/<id>.json # rerun a recorded job (same LoRA, bit for bit)
    lora-studio resume <id or record>           # continue a cancelled or crashed job from its last checkpoint
    lora-studio check data/my_concept           # the dataset report, before any model loads
    lora-studio check --lora x.safetensors --base sd15.safetensors
    lora-studio import my_pictures.zip          # a ZIP into a new dataset folder (the node's limits)
    lora-studio presets                         # the three presets and every field
    lora-studio jobs [show <id>]                # job records
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path

from .config import TrainConfig, field_names, field_table, field_type
from .errors import ConfigError, LoraStudioError, Problem, TrainingCancelled
from .presets import PRESETS, apply_preset

log = logging.getLogger("lora_studio.cli")

_HERE = Path(__file__).resolve().parent
# The sample dataset: beside the package in a checkout / custom node folder, inside it when pip-installed.
DEMO_DATASET = next((p for p in (_HERE.parent / "example_data" / "watercolor_fox",
                                 _HERE / "example_data" / "watercolor_fox") if p.is_dir()),
                    _HERE.parent / "example_data" / "watercolor_fox")
# Config fields that hold paths: made absolute against the directory the command was typed in, so the
# job record reruns the same job from any folder (the printed commands may `cd` first).
PATH_FIELDS = ("base_model", "dataset", "output_dir", "jobs_dir", "cache_dir", "model_config_dir", "tokenizer_dir",
               "class_data_dir")
DEFAULT_JOBS_DIR = "runs/jobs"


def _parse_value(key: str, raw: str):
    """--set values read by the field's declared type: a text field keeps the text as typed
    (`--set class_prompt=1984` stays "1984"); others are JSON, or text when they are not JSON."""
    if key in field_names() and field_type(key) == "str":
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw  # plain strings need no quotes: --set lr_scheduler=cosine


def _absolute(data: dict) -> dict:
    for key in PATH_FIELDS:
        v = data.get(key)
        if isinstance(v, str) and v.strip():
            data[key] = str(Path(v).expanduser().absolute())
    rf = data.get("resume_from")
    if isinstance(rf, str) and rf.strip() and rf != "latest":
        data["resume_from"] = str(Path(rf).expanduser().absolute())
    return data


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
        args.demo = True
    if args.demo:
        from .models import build_tiny_model

        print("DEMO MODEL: no --base-model given, so a tiny random SD 1.5-shaped model is trained (about 4 MB, "
              "built here, nothing downloaded). It checks the set-up end to end; its LoRA draws noise. For a real "
              "LoRA name a checkpoint: --base-model path/to/v1-5-pruned-emaonly.safetensors", flush=True)
        cache = Path(overrides.get("jobs_dir") or DEFAULT_JOBS_DIR).expanduser().parent / "demo-model"
        overrides.setdefault("base_model", str(build_tiny_model(cache / "tiny-sd15", "sd15")))
        overrides.setdefault("dataset", str(DEMO_DATASET))
        overrides.setdefault("trigger_token", "wcfox")
        overrides.setdefault("name", "demo_tiny_lora")
        # num_threads 1: a 4 MB model is all overhead; more threads only make it wait (40x slower on 2 cores)
        for k, v in dict(resolution=64, test_mode=True, max_train_steps=30, lr_warmup_steps=3,
                         gradient_accumulation_steps=1, learning_rate=1e-3, num_threads=1).items():
            overrides.setdefault(k, v)
    if args.job:
        data = TrainConfig.load(_job_file(args.job, args.jobs_dir)).to_dict()
        data.update(overrides)
        return TrainConfig.from_dict(_absolute(data)).validate()
    cfg = apply_preset(args.preset, overrides)
    return TrainConfig.from_dict(_absolute(cfg.to_dict())).validate()


def _job_file(ref: str, jobs_dir: str | None) -> Path:
    """A job record or config by path, or a job id looked up in the jobs folder."""
    p = Path(ref).expanduser()
    if p.is_file():
        return p
    folder = Path(jobs_dir or DEFAULT_JOBS_DIR).expanduser()
    for cand in (folder / ref, folder / f"{ref}.json"):
        if cand.is_file():
            return cand
    matches = sorted(folder.glob(f"*{ref}*.json")) if folder.is_dir() and ref and "/" not in ref else []
    if len(matches) == 1:
        return matches[0]
    if p.exists() or "/" in ref or os.sep in ref or ref.endswith(".json"):
        return p  # meant as a path: TrainConfig.load says what is wrong with it (missing, a folder, not UTF-8)
    hint = f"{len(matches)} records match it" if matches else f"no record in '{folder}' matches it"
    raise ConfigError([Problem("--job", ref, "a job file, or the id of a record in the jobs folder",
                               f"{hint}; `lora-studio jobs --jobs-dir {folder}` lists them")])


# ------------------------------------------------------------------ train / resume
def _duration(seconds: float) -> str:
    """'42s', '3m 05s', '43h 53m': a full-size model on a CPU says '43h 53m', not 'eta 157971s'."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


class _Progress:
    """One tqdm bar for the run on a terminal: step, loss, lr, it/s and ETA; our log lines print above it.
    Into a file or a pipe (CI logs, `| tee`), a plain line every 5 % instead: a bar's carriage returns garble a log."""

    def __init__(self, tty: bool | None = None):
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.bar = None
        self.start: tuple[float, int] | None = None

    def __call__(self, info) -> None:
        if not self.tty:
            every = max(1, info.total // 20)
            if info.step == 1 or info.step % every == 0 or info.step == info.total:
                if self.start is None:
                    self.start = (time.perf_counter(), info.step)
                dt, ds = time.perf_counter() - self.start[0], info.step - self.start[1]
                rate = f"  {ds / dt:.2f} step/s" if ds and dt > 0 else ""
                print(f"step {info.step}/{info.total}  loss {info.loss:.4f}  lr {info.lr:.2e}{rate}  "
                      f"eta {_duration(info.eta_s)}", flush=True)
            return
        from tqdm.auto import tqdm

        if self.bar is None:
            self.bar = tqdm(total=info.total, initial=info.step - 1, unit="step", desc="training", dynamic_ncols=True)
        self.bar.set_postfix(loss=f"{info.loss:.4f}", lr=f"{info.lr:.2e}", refresh=False)
        self.bar.update(info.step - self.bar.n)
        if info.step >= info.total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .checkpoint import AlreadyFinished
    from .commands import resume_command
    from .interrupt import StopOnSignal
    from .job import run_job
    from .loop import Callbacks

    cfg = build_config(args)
    progress = _Progress()
    with StopOnSignal() as stop:  # Ctrl-C / SIGTERM: stop after this step, keep a checkpoint
        try:
            # on a terminal our log lines print above the bar instead of through it
            with logging_redirect_tqdm(loggers=[logging.getLogger("lora_studio")]) if progress.tty \
                    else contextlib.nullcontext():
                result = run_job(cfg, Callbacks(on_step=progress, should_stop=stop.requested))
        except AlreadyFinished as e:
            print(f"nothing to do: {e}")
            return 0
        except TrainingCancelled as e:
            progress.close()
            print(f"stopped: {e}", file=sys.stderr)
            ck = getattr(e, "checkpoint", None)
            record = getattr(e, "record_path", None)
            if ck and record:
                print(f"checkpoint: {ck}\nto continue, run:\n  {resume_command(record, ck)}", file=sys.stderr)
            return stop.exit_code if stop.requested() else 130
        finally:
            progress.close()
    if result.record_error:
        print(f"warning: {result.record_error}", file=sys.stderr)
    if result.lora_path:
        m = result.record["metrics"]
        print(f"job record: {result.record_path}\n"
              f"held-out loss {m['eval_loss_before']:.4f} -> {m['eval_loss_after']:.4f}; "
              f"time to first step {m['time_to_first_step_s']:.1f} s\n"
              f"rerun it: {result.record['commands']['rerun']}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    args.set = list(args.set or []) + ["resume_from=latest"]
    args.demo, args.preset = False, "fotostudio"
    for flag in ("base_model", "dataset", "trigger", "output_dir", "name"):
        setattr(args, flag, None)
    return cmd_train(args)


# ------------------------------------------------------------------ check / import
def cmd_check(args: argparse.Namespace) -> int:
    if args.lora or args.base:
        if not (args.lora and args.base):
            raise ConfigError([Problem("--lora/--base", args.lora or args.base, "both a LoRA and a base model",
                                       "give --lora x.safetensors --base model.safetensors")])
        return _check_lora(args.lora, args.base)
    if not args.dataset:
        raise ConfigError([Problem("dataset", "", "a dataset folder (or --lora with --base)",
                                   "write e.g. `lora-studio check data/my_concept`")])
    return _check_dataset(args.dataset, args.preset, args.resolution, args.trigger or "")


def _check_dataset(folder: str, preset: str, resolution: int | None, trigger: str) -> int:
    from .data import check_dataset
    from .data.findings import DatasetCheckError
    from .presets import get_preset

    p = get_preset(preset)
    res = resolution or p.values.get("resolution", 512)
    data_log = logging.getLogger("lora_studio.data")
    level = data_log.level
    data_log.setLevel(logging.ERROR)  # every finding is in the report printed below: say each once
    try:
        _, report = check_dataset(folder, resolution=res, trigger_token=trigger, preset_key=p.key)
    except DatasetCheckError as e:
        print(e.report.to_text())
        return 1
    finally:
        data_log.setLevel(level)
    print(report.to_text())
    return 0


def _check_lora(lora: str, base: str) -> int:
    """Is this LoRA meant for this base model? (The guide's "colour shifts: wrong base model" row.)"""
    from .export import base_mismatch_warning, read_lora_metadata
    from .job import file_sha256

    metadata = read_lora_metadata(Path(lora).expanduser())
    bp = Path(base).expanduser()
    if not bp.exists():
        raise LoraStudioError(f"--base '{base}' does not exist. Fix: name the checkpoint file or diffusers "
                              "folder you generate with.")
    if bp.is_dir() and not (bp / "unet").is_dir():
        raise LoraStudioError(f"--base '{base}' is a folder but not a diffusers model (no unet/ inside). "
                              "Fix: name the checkpoint file, or the diffusers folder itself.")
    warning = base_mismatch_warning(metadata, file_sha256(bp), bp.name)
    print(f"warning: {warning}" if warning else f"ok: {Path(lora).name} was trained on {bp.name}")
    return 1 if warning else 0


def cmd_import(args: argparse.Namespace) -> int:
    from .commands import train_command
    from .data import import_zip

    zp = Path(args.zip).expanduser().absolute()
    target = import_zip(zp, Path(args.dest).expanduser() if args.dest else zp.parent, name=args.name)
    print(f"imported {zp.name} into {target}")
    rc = _check_dataset(str(target), args.preset, None, args.trigger or "")
    print("train on it: " + train_command(["--dataset", str(target), "--trigger", args.trigger or "<your trigger>",
                                           "--base-model", "<checkpoint.safetensors>"]))
    return rc


# ------------------------------------------------------------------ presets / jobs
def cmd_presets(_: argparse.Namespace) -> int:
    for p in PRESETS.values():
        print(f"{p.key:11s} {p.title}  ({p.suited_for_en}; >= {p.min_vram_gb} GB VRAM)\n            {p.focus_en}")
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

def _records(folder: Path) -> list[tuple[Path, dict]]:
    out = []
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            rec = json.loads(f.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            continue
        if isinstance(rec, dict) and "id" in rec and "config" in rec:
            out.append((f, rec))
    return out


def cmd_jobs(args: argparse.Namespace) -> int:
    from .runstate import record_status  # "interrupted", not "running", when the run's process is gone

    folder = Path(args.jobs_dir or DEFAULT_JOBS_DIR).expanduser()
    if args.action == "show":
        if not args.job:
            raise ConfigError([Problem("job", "", "a job id or record", "write `lora-studio jobs show <id>`")])
        return _show_job(_job_file(args.job, str(folder)))
    records = _records(folder)
    if not records:
        print(f"no job records in {folder} (train one, or give --jobs-dir)")
        return 0
    for _, rec in records:
        m = rec.get("metrics") or {}
        loss = f"loss {m['eval_loss_before']:.4f} -> {m['eval_loss_after']:.4f}" if "eval_loss_after" in m else ""
        steps = f"{m.get('steps', '?')}/{rec['config'].get('max_train_steps', '?')} steps" if m else ""
        print(f"{rec['id']}  {record_status(rec):11s}  {steps:14s}  {loss}")
    return 0


def _show_job(path: Path) -> int:
    from .runstate import record_status

    rec = json.loads(path.read_text(encoding="utf-8"))
    c, m, b = rec.get("config", {}), rec.get("metrics") or {}, rec.get("base_model") or {}
    lines = [f"job       {rec.get('id')}  ({record_status(rec)})", f"record    {path}",
             f"created   {rec.get('created')}   finished {rec.get('finished', '-')}",
             f"base      {b.get('path', c.get('base_model'))} ({b.get('family', '?')}, sha256 {str(b.get('sha256'))[:12]})",
             f"dataset   {rec.get('dataset', {}).get('path')} ({rec.get('dataset', {}).get('images')} images)",
             f"preset    {c.get('preset')}: rank {c.get('rank')}, lr {c.get('learning_rate')}, "
             f"{c.get('max_train_steps')} steps at {c.get('resolution')} px"]
    if m:
        lines.append(f"result    {m.get('steps')} steps, held-out loss {m.get('eval_loss_before', 0):.4f} -> "
                     f"{m.get('eval_loss_after', 0):.4f}, first step after {m.get('time_to_first_step_s', 0):.1f} s")
    if rec.get("outputs"):
        lines.append(f"LoRA      {rec['outputs'].get('lora')}")
    if rec.get("message"):
        lines.append(f"message   {rec['message']}")
    for k, cmd in (rec.get("commands") or {"rerun": rec.get("command", "")}).items():
        lines.append(f"{k:9s} {cmd}")
    print("\n".join(lines))
    return 0


# ------------------------------------------------------------------ the parser
def _train_flags(t: argparse.ArgumentParser, job_required: bool = False) -> None:
    if not job_required:
        t.add_argument("--job", help="job JSON (a config, or a job record from an earlier run), or a record's id")
        t.add_argument("--preset", default="fotostudio", help=f"one of {', '.join(PRESETS)} (ignored with --job)")
        t.add_argument("--base-model", dest="base_model", help="checkpoint file or diffusers folder; none = demo model")
        t.add_argument("--dataset", help="dataset folder")
        t.add_argument("--trigger", help="trigger token replacing <my_token> in prompts")
        t.add_argument("--output-dir", dest="output_dir", help="where the LoRA goes (e.g. ComfyUI/models/loras)")
        t.add_argument("--name", help="LoRA file name")
        t.add_argument("--demo", action="store_true", help="use the built-in TINY RANDOM demo model and sample data")
    t.add_argument("--jobs-dir", dest="jobs_dir", help=f"where job records go (default {DEFAULT_JOBS_DIR})")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config field")


def parser() -> argparse.ArgumentParser:
    from .commands import installed

    ap = argparse.ArgumentParser(prog="lora-studio" if installed() else "python -m trainer",
                                 description="LoRA Studio: train LoRA adapters for SD 1.5, SD 2.x and SDXL headless.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train one LoRA (no --base-model: the tiny demo model)")
    _train_flags(t)
    t.set_defaults(func=cmd_train)
    r = sub.add_parser("resume", help="continue a job from its latest checkpoint")
    r.add_argument("job", help="the job record (path or id)")
    _train_flags(r, job_required=True)
    r.set_defaults(func=cmd_resume)
    c = sub.add_parser("check", help="check a dataset (report; exit 1 on blocking problems), or a LoRA against a base")
    c.add_argument("dataset", nargs="?", help="dataset folder")
    c.add_argument("--preset", default="fotostudio", help="judge the picture count and sizes against this preset")
    c.add_argument("--resolution", type=int, help="training resolution (default: the preset's)")
    c.add_argument("--trigger", help="the trigger token the captions should contain")
    c.add_argument("--lora", help="a LoRA .safetensors: was it trained on --base? (exit 1 if not)")
    c.add_argument("--base", help="the base checkpoint file or diffusers folder")
    c.set_defaults(func=cmd_check)
    i = sub.add_parser("import", help="unpack a dataset ZIP into a new folder (checked first) and report on it")
    i.add_argument("zip", help="the .zip file")
    i.add_argument("--dest", help="folder to create the dataset in (default: beside the ZIP)")
    i.add_argument("--name", help="name of the new dataset folder (default: the ZIP's name)")
    i.add_argument("--preset", default="fotostudio", help="judge the pictures against this preset")
    i.add_argument("--trigger", help="the trigger token the captions should contain")
    i.set_defaults(func=cmd_import)
    sub.add_parser("presets", help="list presets and fields").set_defaults(func=cmd_presets)
    j = sub.add_parser("jobs", help="list job records, or show one")
    j.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    j.add_argument("job", nargs="?", help="with show: a job id or record path")
    j.add_argument("--jobs-dir", dest="jobs_dir", help=f"where the job records are (default {DEFAULT_JOBS_DIR})")
    j.set_defaults(func=cmd_jobs)
    return ap


def _quiet_libraries() -> None:
    """The terminal shows our messages and one progress bar, not the libraries' own.

    transformers' "requires torchvision" notes (an install that can replace a working torch) and its
    per-model "Loading weights" / "Writing model shards" bars say nothing a user can act on here.
    """
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    with_tv = logging.getLogger("transformers.utils.import_utils")
    with_tv.addFilter(lambda r: "requires torchvision" not in r.getMessage())
    try:
        from transformers.utils import logging as tf_logging

        tf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        from diffusers.utils import logging as df_logging

        df_logging.disable_progress_bar()
    except ImportError:
        pass


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
    args = parser().parse_args(argv)
    _quiet_libraries()
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
