"""Runs one trainer in its own process and records, without changing the trainer's code:

- a timestamp after every optimizer step (torch's global optimizer step post-hook; on CUDA the hook
  synchronises first, which both trainers do each step anyway when they read the loss),
- the process's peak GPU memory (torch.cuda.max_memory_allocated / max_memory_reserved) or, on the
  CPU, its peak resident set size (getrusage ru_maxrss),
and writes them as JSON to --result when the trainer returns or fails.

    python bench/_launch.py --result R.json --mode script --script train_text_to_image_lora.py -- <its args>
    python bench/_launch.py --result R.json --mode ours -- <job.json>
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path

T_IMPORT = time.time()
HERE = Path(__file__).resolve().parent


def _torchvision_or_shim() -> str:
    """The guide's script imports torchvision.transforms. PyPI's torchvision cannot load beside a +cpu torch
    ('operator torchvision::nms does not exist'); there a PIL stand-in for the few transforms it uses is put
    on the path (CPU runs only; the result says so)."""
    try:
        import torchvision  # noqa: F401
        return "torchvision " + torchvision.__version__
    except Exception as e:  # ImportError, or RuntimeError from a mismatched build
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        # transformers and diffusers decide once whether torchvision exists; let them decide "no" before the
        # stand-in is visible, so they never import parts of torchvision it does not have.
        import diffusers.utils.import_utils  # noqa: F401
        from transformers.utils import import_utils as tf_import_utils

        tf_import_utils.is_torchvision_available()
        sys.path.insert(0, str(HERE / "_shim"))
        import torchvision  # noqa: F401  (the shim)
        return f"bench/_shim (PIL stand-in; real torchvision unavailable: {e.__class__.__name__}: {str(e)[:80]})"


def _parse_args() -> tuple[argparse.Namespace, list[str]]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--result", required=True)
    ap.add_argument("--mode", choices=("script", "ours"), required=True)
    ap.add_argument("--script", default="")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("rest", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    return a, (a.rest[1:] if a.rest[:1] == ["--"] else a.rest)


def main() -> int:
    a, rest = _parse_args()

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    cuda = torch.cuda.is_available()
    steps_pc: list[float] = []
    steps_wall: list[float] = []

    def on_step(opt, args, kwargs):
        if type(opt).__name__ == "AcceleratedOptimizer":  # its inner torch optimizer reports the same step
            return
        if cuda:
            torch.cuda.synchronize()
        steps_pc.append(time.perf_counter())
        steps_wall.append(time.time())

    from torch.optim.optimizer import register_optimizer_step_post_hook

    register_optimizer_step_post_hook(on_step)
    res: dict = {"mode": a.mode, "threads": torch.get_num_threads(), "ok": False}
    t_spawn = float(os.environ.get("BENCH_T_SPAWN", T_IMPORT))
    try:
        if a.mode == "script":
            res["torchvision"] = _torchvision_or_shim()
            import runpy

            sys.argv = [a.script] + rest
            runpy.run_path(a.script, run_name="__main__")
        else:
            sys.path.insert(0, str(HERE.parent))
            from bench.ours import run_from_file

            res["job"] = run_from_file(rest[0])
        res["ok"] = True
    except SystemExit as e:
        res["ok"] = e.code in (0, None)
        if not res["ok"]:
            res["error"] = f"SystemExit({e.code})"
    except BaseException as e:  # noqa: BLE001 - recorded, then the exit code says it failed
        res["error"] = f"{e.__class__.__name__}: {e}"
        res["traceback"] = traceback.format_exc()[-4000:]
    finally:
        res["step_times_s"] = [t - steps_pc[0] for t in steps_pc] if steps_pc else []
        res["time_to_first_step_s"] = steps_wall[0] - t_spawn if steps_wall else None
        res["process_seconds"] = time.time() - t_spawn
        if cuda:
            res["max_memory_allocated"] = torch.cuda.max_memory_allocated()
            res["max_memory_reserved"] = torch.cuda.max_memory_reserved()
        res["max_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        Path(a.result).write_text(json.dumps(res, indent=1))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
