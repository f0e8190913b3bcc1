"""The `--ops` table: per side and configuration, what one optimizer step dispatches (see bench/opcount.py)."""
from __future__ import annotations

import json
import math
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ANCHOR_PATHS, REPO_ROOT, build_model, make_dataset, parse_config

OPS_DEFAULT_CONFIGS = "sd15-64-b1,sdxl-64-b1"
OPS_IMAGES = 4
LABELS = {"ours": "ours, eager", "ours-compiled": "ours, torch.compile", "script": "guide's script"}


def _run_side(side: str, run_dir: Path, *, device: str, threads: int, timeout: float, script: Path | None,
              rest: list[str], window_start: int = 1) -> dict:
    from bench.run_benchmark import run_env

    run_dir.mkdir(parents=True, exist_ok=True)
    result, log = run_dir / "result.json", run_dir / "log.txt"
    env = run_env(run_dir, device, threads, ours=side != "script")
    env["PYTHONPATH"] = str(REPO_ROOT) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "bench.ops", "--side", side, "--result", str(result), "--threads", str(threads),
           "--window-start", str(window_start)]
    if script:
        cmd += ["--script", str(script)]
    cmd += ["--", *rest]
    t0 = time.time()
    with open(log, "w") as f:
        try:
            rc = subprocess.run(cmd, cwd=run_dir, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    res = json.loads(result.read_text()) if result.is_file() else {"ok": False, "error": f"exit {rc}"}
    res.update(returncode=rc, seconds=time.time() - t0, command=shlex.join(cmd), log=str(log))
    if not res.get("ok"):
        res["log_tail"] = log.read_text(errors="replace")[-2500:] if log.is_file() else ""
    return res


def _row(label: str, r: dict | None, base: dict | None) -> str:
    if r is None:
        return f"| {label} | not run | | | | | |"
    if not r.get("ok"):
        return f"| {label} | FAILED: {str(r.get('error'))[:90]} | | | | | |"
    if "generated_kernels" in r:
        # torch.compile runs a frame eager while a (non-infra) TorchDispatchMode is active ("not supported today in
        # torch.compile", torch/_dynamo/convert_frame.py), so the counted window of the compiled side is the eager
        # step: its dispatched figures say nothing about the compiled one and are not shown as if they did.
        # What the compiled step runs is inductor's generated kernels, read from its metrics.
        gen = (f"{r['generated_kernels']} generated ({r.get('generated_cpp_vec_kernels', 0)} vectorised), forward + "
               f"backward graphs, as inductor generated them in the run; graph breaks: {r.get('graph_breaks')}")
        na = "not countable (a dispatch mode switches compiled code off)"
        return f"| {label} | {na} | — | — | — | — | {gen} |"
    ratio = f"{r['kernel_ops'] / base['kernel_ops']:.2f}×" if base and base.get("ok") else "—"
    gen = "—"
    syncs = f"{r['host_syncs']}"
    copies = f"{r['blocking_copies']} blocking / {r['async_copies']} async"
    return f"| {label} | {r['all_ops']} | {r['kernel_ops']} | {ratio} | {syncs} | {copies} | {gen} |"


def render(entries: list[dict], device: str, command: str, precision: str) -> str:
    lines = [f"## Ops per optimizer step ({precision}, {device}; `{command}`)", ""]
    for e in entries:
        lines += [f"### {e['config']}", "",
                  "| per step | all ops | kernel ops (non-view, non-alloc) | ÷ script | host syncs | "
                  "cross-device copies | compiled kernels |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        base = e.get("script")
        for side in ("ours", "ours-compiled", "script"):
            if side in e or side in e.get("skipped", {}):
                lines.append(_row(LABELS[side], e.get(side), base if side != "script" else None))
        for side, why in e.get("skipped", {}).items():
            lines.append(f"- {LABELS[side]} not run: {why}")
        lines.append("")
    lines.append("Counted by a TorchDispatchMode over one whole iteration of each trainer's own loop, from the end of "
                 "one optimizer step to the end of the next: the script's steps 1→2, ours the first after its first "
                 f"epoch ({OPS_IMAGES} pictures, each encoded once on first use; the script encodes every step). The "
                 "script's host-side picture decoding is left out. Cross-device copies can only occur with "
                 "`--device cuda`.")
    return "\n".join(lines) + "\n"


def run_ops(args, argv) -> int:
    import torch

    from bench.run_benchmark import find_anchor_scripts

    device = "cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and device != "cuda":
        raise SystemExit("--device cuda, but torch sees no GPU")
    precision = args.precision or "bf16"
    sides = [s.strip() for s in args.ops_sides.split(",") if s.strip()]
    configs = [parse_config(c) for c in (args.configs or OPS_DEFAULT_CONFIGS).split(",")]
    work = Path(args.work_dir).expanduser().resolve() if args.work_dir else Path(tempfile.mkdtemp(prefix="lora-ops-"))
    work.mkdir(parents=True, exist_ok=True)
    scripts, anchor = {}, {}
    if "script" in sides and (args.diffusers_repo or args.anchor_script):
        scripts, anchor = find_anchor_scripts(args.diffusers_repo, args.anchor_script, args.anchor_script_sdxl,
                                              work / "anchor")
    command = shlex.join(["python", "bench/run_benchmark.py", *(argv if argv is not None else sys.argv[1:])])
    entries = []
    for cfg in configs:
        e: dict = {"config": cfg.name, "skipped": {}}
        print(f"[{cfg.name}] building model and data", file=sys.stderr)
        model = build_model(cfg, work, device)
        data = make_dataset(work / "data", OPS_IMAGES, cfg.resolution)
        # ours encodes each picture on first use (on the CPU): its steps of the first epoch also run the VAE and
        # text encoder once per picture; the steady step is the one after that epoch. The script's are all alike.
        first_epoch = math.ceil(OPS_IMAGES / cfg.batch)
        for side in sides:
            _count_side(args, cfg, side, e, work=work, device=device, model=model, data=data, scripts=scripts,
                        precision=precision, first_epoch=first_epoch)
        entries.append(e)
        if args.out:
            _write(args.out, device, command, precision, anchor, entries)
        if not args.keep_work:
            shutil.rmtree(work / "models", ignore_errors=True)  # GBs of random weights
    md = render(entries, device, command, precision)
    if args.out:
        _write(args.out, device, command, precision, anchor, entries)
    print(md)
    if not args.work_dir and not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if any(not e[s].get("ok") for e in entries for s in sides if s in e) else 0


def _count_side(args, cfg, side: str, e: dict, *, work: Path, device: str, model, data, scripts: dict, precision: str,
                first_epoch: int) -> None:
    """One side's counts for one config into e[side], or why it was skipped into e["skipped"][side]."""
    from bench.run_benchmark import script_args

    run_dir = work / "ops" / f"{cfg.name}-{side}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    script = None
    start = 1 if side == "script" else first_epoch
    if side == "script":
        script = scripts.get(cfg.family)
        if script is None:
            e["skipped"][side] = (f"no {ANCHOR_PATHS[cfg.family]} (give --diffusers-repo or --anchor-script)"
                                  if not scripts else f"no {ANCHOR_PATHS[cfg.family]} in the snapshot")
            return
        rest = script_args(cfg.family, model, data, run_dir / "output", cfg, 2, args.rank, precision)
    else:
        from bench.ours import write_job

        job = write_job(run_dir / "job.json", model_dir=model, data_dir=data, work=run_dir, cfg=cfg.to_dict(),
                        steps=start + 1, rank=args.rank, precision=precision,
                        compile_mode="on" if side == "ours-compiled" else "off")
        rest = [str(job)]
    print(f"[{cfg.name}] {side}", file=sys.stderr)
    e[side] = _run_side(side, run_dir, device=device, threads=args.threads, timeout=args.timeout,
                        script=script, rest=rest, window_start=start)
    r = e[side]
    print(f"[{cfg.name}] {side}: " + (f"{r['all_ops']} ops, {r['kernel_ops']} kernel ops, {r['host_syncs']} "
                                     f"syncs ({r['seconds']:.0f} s)" if r.get("ok") else
                                     f"FAILED {r.get('error')}\n{r.get('log_tail', '')[-1500:]}"),
          file=sys.stderr)


def _write(out: str, device: str, command: str, precision: str, anchor: dict, entries: list[dict]) -> None:
    from bench.run_benchmark import machine_info

    rep = {"command": command, "device": device, "precision": precision, "anchor": anchor,
           "machine": machine_info(device, 1), "configs": entries,
           "markdown": render(entries, device, command, precision)}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(rep, indent=1, default=str))
