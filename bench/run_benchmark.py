#!/usr/bin/env python3
"""Train the same LoRA job with LoRA Studio and with the guide's diffusers script, side by side.

Same random-weight base model (SD1.5- / SDXL-shaped, built here), same generated dataset, same rank,
resolution, batch, precision and steps. Each trainer runs in its own process (bench/_launch.py), which
timestamps every optimizer step and records the process's peak memory. Prints a markdown table per
configuration and writes everything to --out as JSON. See bench/README.md.

    python bench/run_benchmark.py --diffusers-repo /path/to/diffusers --configs sd15-512-b1,sd15-512-b4 \
        --steps 30 --out bench/results.json
    python bench/run_benchmark.py --diffusers-repo /path/to/diffusers   # no GPU: tiny models on the CPU
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (ANCHOR_PATHS, CPU_DEFAULT_CONFIGS, GPU_DEFAULT_CONFIGS, REPO_ROOT, BenchConfig,  # noqa: E402
                          _config_root_for, build_model, make_dataset, parse_config)

LAUNCHER = Path(__file__).resolve().parent / "_launch.py"
SIDES = ("ours", "script")


# ------------------------------------------------------------------ the guide's script
def _git(git_dir: Path, *args: str) -> str:
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], check=True, capture_output=True,
                          text=True).stdout


def find_anchor_scripts(diffusers_repo: str | None, anchor_script: str | None, anchor_script_sdxl: str | None,
                        export_dir: Path) -> tuple[dict[str, Path], dict]:
    """{family: script path} and where they came from. A bare repo's files are exported into export_dir
    (a temporary folder outside the project: the script is never copied into the repository)."""
    scripts: dict[str, Path] = {}
    info: dict = {}
    if anchor_script:
        p = Path(anchor_script).expanduser().resolve()
        if not p.is_file():
            raise SystemExit(f"--anchor-script {p}: no such file")
        scripts["sd15"] = p
        sx = Path(anchor_script_sdxl).expanduser().resolve() if anchor_script_sdxl else p.with_name(
            Path(ANCHOR_PATHS["sdxl"]).name)
        if sx.is_file():
            scripts["sdxl"] = sx
        info["source"] = str(p.parent)
        src = p.parent / "SOURCE.json"  # written by --export-anchor
        if src.is_file():
            with contextlib.suppress(ValueError):
                prev = json.loads(src.read_text())
                info.update({k: prev[k] for k in ("commit", "commit_date") if k in prev},
                            exported_from=prev.get("source"))
    elif diffusers_repo:
        repo = Path(diffusers_repo).expanduser().resolve()
        if (repo / ANCHOR_PATHS["sd15"]).is_file():  # a checkout
            for fam, rel in ANCHOR_PATHS.items():
                if (repo / rel).is_file():
                    scripts[fam] = repo / rel
            git_dir = repo / ".git"
        elif (repo / "HEAD").is_file() and (repo / "objects").is_dir():  # a bare repository
            git_dir = repo
            export_dir.mkdir(parents=True, exist_ok=True)
            for fam, rel in ANCHOR_PATHS.items():
                try:
                    text = _git(repo, "show", f"HEAD:{rel}")
                except subprocess.CalledProcessError:
                    continue
                dst = export_dir / Path(rel).name
                dst.write_text(text)
                scripts[fam] = dst
        else:
            raise SystemExit(f"--diffusers-repo {repo}: neither a diffusers checkout (no {ANCHOR_PATHS['sd15']}) "
                             "nor a bare git repository")
        info["source"] = str(repo)
        try:
            info["commit"] = _git(git_dir, "rev-parse", "HEAD").strip()
            info["commit_date"] = _git(git_dir, "log", "-1", "--format=%cI").strip()
        except (subprocess.CalledProcessError, FileNotFoundError):
            # An exported snapshot (no .git) names its commit in a COMMIT file: "<sha> <date>".
            commit_file = repo / "COMMIT"
            if commit_file.is_file():
                sha, _, date = commit_file.read_text().strip().partition(" ")
                info["commit"], info["commit_date"] = sha, date.strip()
    info["scripts"] = {k: str(v) for k, v in scripts.items()}
    return scripts, info


def script_args(script_family: str, model: Path, data: Path, out: Path, cfg: BenchConfig, steps: int, rank: int,
                precision: str) -> list[str]:
    """The guide's command for this job (flags as in the snapshot's argparse)."""
    a = ["--pretrained_model_name_or_path", str(model), "--train_data_dir", str(data),
         "--resolution", str(cfg.resolution), "--center_crop", "--train_batch_size", str(cfg.batch),
         "--max_train_steps", str(steps), "--rank", str(rank), "--mixed_precision", precision,
         "--learning_rate", "1e-4", "--lr_scheduler", "constant", "--lr_warmup_steps", "0",
         "--max_grad_norm", "1.0", "--dataloader_num_workers", "0", "--seed", "42",
         "--checkpointing_steps", str(10 ** 9), "--output_dir", str(out)]
    if cfg.gradient_checkpointing:
        a.append("--gradient_checkpointing")
    return a


# ------------------------------------------------------------------ one run in its own process
def run_env(run_dir: Path, device: str, threads: int, ours: bool) -> dict:
    """Offline, a fresh HF_HOME, and on the CPU the run's thread count."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DIFFUSERS_OFFLINE="1",
               HF_HOME=str(run_dir / "hf_home"),  # a fresh cache: datasets builds its arrow files each time, as for a new user
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1", WANDB_MODE="disabled")
    if ours:
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def launch(mode: str, run_dir: Path, *, device: str, threads: int, timeout: float, script: Path | None = None,
           rest: list[str]) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    result = run_dir / "result.json"
    log = run_dir / "log.txt"
    env = run_env(run_dir, device, threads, ours=mode == "ours")
    cmd = [sys.executable, str(LAUNCHER), "--result", str(result), "--mode", mode]
    if threads and device == "cpu":
        cmd += ["--threads", str(threads)]
    if script:
        cmd += ["--script", str(script)]
    cmd += ["--", *rest]
    env["BENCH_T_SPAWN"] = repr(time.time())
    with open(log, "w") as f:
        try:
            rc = subprocess.run(cmd, cwd=run_dir, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    res = json.loads(result.read_text()) if result.is_file() else {"ok": False}
    res["returncode"] = rc
    res["log"] = str(log)
    res["command"] = shlex.join(cmd)
    if not res.get("ok"):
        tail = log.read_text(errors="replace")[-3000:] if log.is_file() else ""
        res.setdefault("error", f"exit {rc}")
        res["log_tail"] = tail
    return res


def summarize(res: dict, batch: int, warmup: int, flops_per_image: float, peak_tflops: float, device: str) -> dict:
    """Steady-state speed from the per-step timestamps: the first `warmup` steps are left out, then
    step time = (end of last step - end of step `warmup`) / (steps after it)."""
    t = res.get("step_times_s") or []
    out = {"ok": bool(res.get("ok")), "steps_done": len(t), "error": res.get("error")}
    w = min(max(1, warmup), len(t) - 1)
    if w >= 1 and len(t) - w >= 1:
        step_s = (t[-1] - t[w - 1]) / (len(t) - w)
        diffs = [b - a for a, b in zip(t[w - 1:-1], t[w:])]
        out.update(warmup_steps=w, measured_steps=len(t) - w, step_s=step_s, median_step_s=statistics.median(diffs),
                   steps_per_s=1 / step_s, images_per_s=batch / step_s)
        out["tflops"] = flops_per_image * out["images_per_s"] / 1e12
        out["pct_of_peak"] = 100 * out["tflops"] / peak_tflops if peak_tflops else None
    out["time_to_first_step_s"] = res.get("time_to_first_step_s")
    out["process_seconds"] = res.get("process_seconds")
    if device.startswith("cuda"):
        out["peak_mem_allocated_gb"] = (res.get("max_memory_allocated") or 0) / 1e9 or None
        out["peak_mem_reserved_gb"] = (res.get("max_memory_reserved") or 0) / 1e9 or None
    out["peak_rss_gb"] = (res.get("max_rss") or 0) / 1e9 or None
    for k in ("torchvision", "job", "log", "log_tail", "command", "traceback"):
        if res.get(k):
            out[k] = res[k]
    return out


# ------------------------------------------------------------------ report
def _f(v, fmt="{:.2f}", none="—"):
    return none if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)


def markdown_table(entry: dict, device: str) -> str:
    gpu = device.startswith("cuda")
    mem_a, mem_r = ("peak mem allocated (GB)", "peak mem reserved (GB)") if gpu else ("peak RSS (GB)", "—")
    prec = "fp32" if entry["precision"] == "no" else entry["precision"]
    head = (f"### {entry['config']['name']}  ({prec}, rank {entry['rank']}, {entry['steps']} steps, "
            f"{_f(entry['flops_per_image'] / 1e12, '{:.4g}')} TFLOP/image)\n\n"
            f"| trainer | steps/s | images/s | TFLOP/s | % of peak | {mem_a} | {mem_r} | time to first step (s) "
            "| ours ÷ script (images/s) |\n|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for side in SIDES:
        r = entry.get(side)
        if r is None:
            rows.append(f"| {side} | — | — | — | — | — | — | — | {entry.get(side + '_skipped', 'not run')} |")
            continue
        if not r.get("ok"):
            rows.append(f"| {side} | FAILED: {str(r.get('error'))[:80]} | | | | | | | |")
            continue
        a = r.get("peak_mem_allocated_gb") if gpu else r.get("peak_rss_gb")
        b = r.get("peak_mem_reserved_gb") if gpu else None
        ratio = _f(entry.get("ratio_images_per_s"), "{:.2f}×") if side == "ours" else "1.00×" if entry.get(
            "ratio_images_per_s") else "—"
        rows.append(f"| {side} | {_f(r.get('steps_per_s'))} | {_f(r.get('images_per_s'))} | "
                    f"{_f(r.get('tflops'), '{:.3g}')} | {_f(r.get('pct_of_peak'), '{:.2g} %')} | {_f(a)} | {_f(b)} | "
                    f"{_f(r.get('time_to_first_step_s'), '{:.1f}')} | {ratio} |")
    return head + "\n".join(rows) + "\n"


def machine_info(device: str, threads: int) -> dict:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "device": device}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gb"] = torch.cuda.get_device_properties(0).total_memory / 1e9
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info.update(cpu=cpu, cpu_count=os.cpu_count(), torch_threads=threads if device == "cpu" else torch.get_num_threads())
    for mod in ("torch", "diffusers", "peft", "accelerate", "transformers", "datasets", "torchvision"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001 - absent or broken (PyPI torchvision beside a +cpu torch)
            info[mod] = f"unavailable ({e.__class__.__name__})"
    return info


# ------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--diffusers-repo", help="a diffusers checkout or bare git repository holding the guide's script")
    ap.add_argument("--anchor-script", help="the guide's train_text_to_image_lora.py itself (instead of --diffusers-repo); "
                    "train_text_to_image_lora_sdxl.py beside it is used for SDXL")
    ap.add_argument("--anchor-script-sdxl", help="train_text_to_image_lora_sdxl.py, if not beside --anchor-script")
    ap.add_argument("--device", default="auto", help="auto | cuda | cpu")
    ap.add_argument("--configs", help=f"comma-separated; default GPU: {GPU_DEFAULT_CONFIGS}; CPU: {CPU_DEFAULT_CONFIGS}")
    ap.add_argument("--steps", type=int, help="optimizer steps per run (default 30 on a GPU, 20 on the CPU)")
    ap.add_argument("--warmup", type=int, help="steps left out of the steady-state timing (default a quarter, >= 1)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--precision", help="no | bf16 | fp16 (default bf16 on a GPU, no on the CPU)")
    ap.add_argument("--images", type=int, default=16, help="generated pictures in the dataset")
    ap.add_argument("--sides", default="ours,script", help="ours,script | ours | script")
    ap.add_argument("--threads", type=int, default=1, help="CPU only: torch threads per run (default 1; see README)")
    ap.add_argument("--peak-tflops", type=float, help="the card's peak instead of measuring a matmul")
    ap.add_argument("--work-dir", help="models, data and logs (default: a new temporary folder)")
    ap.add_argument("--keep-work", action="store_true", help="keep the temporary work folder")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per run")
    ap.add_argument("--out", help="write the results as JSON here (rewritten after each configuration)")
    ap.add_argument("--ops", action="store_true", help="count what one optimizer step dispatches (all ops, kernel "
                    "ops, host syncs) instead of timing; default configs sd15-64-b1,sdxl-64-b1, bf16 (see bench/README.md)")
    ap.add_argument("--ops-sides", default="ours,ours-compiled,script", help="--ops: ours,ours-compiled,script")
    ap.add_argument("--export-anchor", metavar="DIR", help="only copy the guide's scripts from --diffusers-repo into DIR "
                    "(for a machine without the snapshot) and exit; DIR must not be tracked by git")
    return ap


@dataclass
class _Plan:
    """What one benchmark invocation runs, from the command line and the machine."""
    device: str
    gpu: bool
    configs: list[BenchConfig]
    steps: int
    warmup: int
    precision: str
    sides: list[str]
    work: Path
    scripts: dict[str, Path] = field(default_factory=dict)  # the guide's script per family
    anchor_info: dict = field(default_factory=dict)
    skipped_script: str | None = None  # why the guide's side does not run
    peak: dict = field(default_factory=dict)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.export_anchor:
        return _export_anchor(args)
    if args.ops:
        from bench.ops_report import run_ops

        return run_ops(args, argv)
    plan = _plan(args)
    _find_script_side(args, plan)
    print(f"work folder: {plan.work}", file=sys.stderr)
    plan.peak = {"tflops": args.peak_tflops, "source": "--peak-tflops"} if args.peak_tflops else \
        measure_peak(plan.device, args.threads)
    print(f"peak: {plan.peak['tflops']:.3g} TFLOP/s ({plan.peak.get('how', plan.peak['source'])})", file=sys.stderr)
    entries = []
    for cfg in plan.configs:
        entries.append(_bench_config(args, plan, cfg))
        if args.out:  # after each configuration: a run cut short still leaves what it measured
            _write(args, argv, plan, entries)
    report = _write(args, argv, plan, entries)
    print(report["markdown"])
    if args.out:
        print(f"wrote {args.out}", file=sys.stderr)
    if not args.work_dir and not args.keep_work:
        shutil.rmtree(plan.work, ignore_errors=True)
    failed = [e["config"]["name"] + ":" + side for e in entries for side in SIDES if e.get(side) and not e[side]["ok"]]
    return 1 if failed else 0


def _export_anchor(args) -> int:
    """--export-anchor: copy the guide's scripts out of a diffusers repository (never into this one)."""
    if not args.diffusers_repo:
        raise SystemExit("--export-anchor needs --diffusers-repo")
    dst = Path(args.export_anchor).expanduser().resolve()
    scripts, info = find_anchor_scripts(args.diffusers_repo, None, None, dst)
    for p in scripts.values():
        if p.parent != dst:
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dst / p.name)
    (dst / "SOURCE.json").write_text(json.dumps(info, indent=1))
    print(f"exported {', '.join(sorted(p.name for p in scripts.values()))} from {info.get('source')} "
          f"{info.get('commit', '')[:12]} to {dst} — keep it out of git (it is diffusers' code, not ours)")
    return 0


def _plan(args) -> _Plan:
    """Device, configurations, steps, precision and sides from the flags (and their defaults per device)."""
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but torch sees no GPU")
    gpu = device.startswith("cuda")
    configs = [parse_config(c) for c in (args.configs or (GPU_DEFAULT_CONFIGS if gpu else CPU_DEFAULT_CONFIGS)).split(",")]
    steps = args.steps or (30 if gpu else 20)
    if steps < 2:
        raise SystemExit("--steps must be at least 2 (the first step is never timed)")
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if not set(sides) <= set(SIDES):
        raise SystemExit(f"--sides: choose from {', '.join(SIDES)}")
    work = Path(args.work_dir).expanduser().resolve() if args.work_dir else Path(tempfile.mkdtemp(prefix="lora-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if REPO_ROOT in work.parents and not args.work_dir:
        raise SystemExit("work folder inside the repository")
    return _Plan(device=device, gpu=gpu, configs=configs, steps=steps,
                 warmup=args.warmup if args.warmup is not None else max(1, steps // 4),
                 precision=args.precision or ("bf16" if gpu else "no"), sides=sides, work=work)


def _find_script_side(args, plan: _Plan) -> None:
    """The guide's scripts for the 'script' side, or the reason it cannot run (said once, here)."""
    if "script" not in plan.sides:
        return
    if importlib.util.find_spec("datasets") is None:
        plan.skipped_script = ("the guide's script needs the `datasets` package, which is not installed: "
                               f"`{sys.executable} -m pip install datasets` to compare against it")
    elif not (args.diffusers_repo or args.anchor_script):
        plan.skipped_script = "no --diffusers-repo or --anchor-script given"
    else:
        plan.scripts, plan.anchor_info = find_anchor_scripts(args.diffusers_repo, args.anchor_script,
                                                             args.anchor_script_sdxl, plan.work / "anchor")
    if plan.skipped_script:
        print(f"NOTE: not running the guide's script: {plan.skipped_script}", file=sys.stderr)


def _bench_config(args, plan: _Plan, cfg: BenchConfig) -> dict:
    """One configuration: its model and data built once, each side trained on them, the ratios."""
    import torch

    from bench.flops import train_flops_per_image

    entry: dict = {"config": cfg.to_dict(), "steps": plan.steps, "rank": args.rank, "precision": plan.precision,
                   "images_in_dataset": args.images}
    print(f"[{cfg.name}] building model and data", file=sys.stderr)
    model = build_model(cfg, plan.work, plan.device)
    if plan.gpu:  # the weights built on the GPU are garbage now; give the memory back for the runs
        gc.collect()
        torch.cuda.empty_cache()
    data = make_dataset(plan.work / "data", args.images, cfg.resolution)
    entry["flops_per_image"] = train_flops_per_image(_config_root_for(cfg.model_key, plan.work), cfg.resolution,
                                                     args.rank)
    for side in plan.sides:
        _run_side(args, plan, cfg, side, model, data, entry)
    entry.update(_ratios(entry.get("ours") or {}, entry.get("script") or {}, plan.gpu))
    entry["markdown"] = markdown_table(entry, plan.device)
    return entry


def _run_side(args, plan: _Plan, cfg: BenchConfig, side: str, model: Path, data: Path, entry: dict) -> None:
    """Train `side` ("ours" or the guide's "script") in its own process; its summary goes into entry[side]."""
    run_dir = plan.work / "runs" / f"{cfg.name}-{side}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    if side == "ours":
        from bench.ours import write_job

        job = write_job(run_dir / "job.json", model_dir=model, data_dir=data, work=run_dir, cfg=cfg.to_dict(),
                        steps=plan.steps, rank=args.rank, precision=plan.precision)
        rest, script = [str(job)], None
    else:
        script = plan.scripts.get(cfg.family)
        if plan.skipped_script or script is None:
            entry["script_skipped"] = plan.skipped_script or f"no {ANCHOR_PATHS[cfg.family]} in the snapshot"
            return
        rest = script_args(cfg.family, model, data, run_dir / "output", cfg, plan.steps, args.rank, plan.precision)
    print(f"[{cfg.name}] {side}: {plan.steps} steps", file=sys.stderr)
    raw = launch(side, run_dir, device=plan.device, threads=args.threads, timeout=args.timeout, script=script,
                 rest=rest)
    r = entry[side] = summarize(raw, cfg.batch, plan.warmup, entry["flops_per_image"], plan.peak["tflops"],
                                plan.device)
    if r["ok"]:
        print(f"[{cfg.name}] {side}: {_f(r.get('images_per_s'))} images/s, first step after "
              f"{_f(r.get('time_to_first_step_s'), '{:.1f}')} s", file=sys.stderr)
    else:
        print(f"[{cfg.name}] {side} FAILED: {r.get('error')}\n{r.get('log_tail', '')[-1500:]}", file=sys.stderr)


def _ratios(o: dict, s: dict, gpu: bool) -> dict:
    """Ours over the script's: throughput, peak memory, time to first step (where both were measured)."""
    if not (o.get("images_per_s") and s.get("images_per_s")):
        return {}
    out = {"ratio_images_per_s": o["images_per_s"] / s["images_per_s"]}
    key = "peak_mem_allocated_gb" if gpu else "peak_rss_gb"
    if o.get(key) and s.get(key):
        out["ratio_peak_memory"] = o[key] / s[key]
    if o.get("time_to_first_step_s") and s.get("time_to_first_step_s"):
        out["ratio_time_to_first_step"] = o["time_to_first_step_s"] / s["time_to_first_step_s"]
    return out


def _write(args, argv, plan: _Plan, entries: list[dict]) -> dict:
    return write_report(args, argv, plan.device, plan.peak, plan.anchor_info, plan.skipped_script, plan.steps,
                        plan.warmup, plan.precision, entries)


def write_report(args, argv, device, peak, anchor_info, skipped_script, steps, warmup, precision, entries) -> dict:
    gpu = device.startswith("cuda")
    report = {
        "command": shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(["run_benchmark.py", *argv]),
        "machine": machine_info(device, args.threads), "peak": peak, "anchor": anchor_info,
        "script_skipped": skipped_script, "steps": steps, "warmup_steps": warmup, "precision": precision,
        "timing": "steady state from per-step timestamps (torch optimizer step post-hook, CUDA-synchronised), "
                  "first warmup_steps left out; time to first step from process spawn to the end of step 1",
        "memory": "GPU: torch.cuda.max_memory_allocated/reserved of the trainer's process" if gpu
        else "CPU: peak resident set size (getrusage ru_maxrss) of the trainer's process, not GPU memory",
        "configs": entries,
    }
    report["markdown"] = render(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    return report


def measure_peak(device: str, threads: int) -> dict:
    from bench.flops import measure_peak_tflops

    return measure_peak_tflops(device, threads if device == "cpu" else None)


def render(report: dict) -> str:
    m = report["machine"]
    hw = m.get("gpu") or f"CPU {m['cpu']} ({m['cpu_count']} cores, {m['torch_threads']} torch thread(s) per run)"
    lines = ["## LoRA training benchmark: LoRA Studio (ours) vs the guide's diffusers script", "",
             f"- machine: {hw}; torch {m['torch']}, diffusers {m['diffusers']}, peft {m['peft']}, "
             f"accelerate {m['accelerate']}, transformers {m['transformers']}, datasets {m['datasets']}",
             f"- peak: {report['peak']['tflops']:.3g} TFLOP/s ({report['peak'].get('how', report['peak']['source'])})",
             f"- guide's script: {report['anchor'].get('source', '—')} {report['anchor'].get('commit', '')[:12]}"
             + (f" — SKIPPED: {report['script_skipped']}" if report["script_skipped"] else ""),
             f"- timing: {report['timing']}; {report['warmup_steps']} warm-up steps of {report['steps']}",
             f"- memory: {report['memory']}", f"- command: `{report['command']}`", ""]
    for e in report["configs"]:
        lines.append(e["markdown"])
        notes = []
        for side in SIDES:
            r = e.get(side)
            if r and r.get("ok"):
                if side == "script" and r.get("torchvision", "").startswith("bench/_shim"):
                    notes.append("script ran with bench/_shim's PIL transforms (no loadable torchvision here)")
                if side == "ours" and r.get("job"):
                    j = r["job"]
                    notes.append(f"ours: loss {_f(j.get('first_loss'), '{:.4f}')} → {_f(j.get('last_loss'), '{:.4f}')}, "
                                 f"job record's own time to first step {_f(j.get('time_to_first_step_s'), '{:.1f}')} s "
                                 "(from after imports)")
        for k, label in (("ratio_peak_memory", "peak memory ours ÷ script"),
                         ("ratio_time_to_first_step", "time to first step ours ÷ script")):
            if e.get(k):
                notes.append(f"{label}: {e[k]:.2f}")
        if e.get("script_skipped"):
            notes.append(f"script not run: {e['script_skipped']}")
        lines += [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
