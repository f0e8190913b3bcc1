"""`run_benchmark.py --ops`: what one optimizer step dispatches, ours (eager / compiled) vs the guide's script.

Each side runs in its own process (`python -m bench.ops --side … --result R.json -- …`), through its real
entry point (ours: `trainer.job.run_job`; the script: `runpy`, unchanged), with `bench.opcount.StepWindow`
counting one iteration of its loop (the script: the second; ours: the first after its first epoch, as ours
encodes each picture once, on first use); the process stops right after it.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIDES = ("ours", "ours-compiled", "script")


def _compiled_kernels() -> dict:
    """Kernels inductor generated for the compiled graphs (forward and backward), read from its metrics."""
    try:
        from torch._inductor import metrics
    except ImportError:
        return {}
    return {"generated_kernels": int(getattr(metrics, "generated_kernel_count", 0)),
            "generated_cpp_vec_kernels": int(getattr(metrics, "generated_cpp_vec_kernel_count", 0)),
            "graph_breaks": _graph_breaks()}


def _graph_breaks() -> int | None:
    try:
        from torch._dynamo.utils import counters

        return int(sum(counters["graph_break"].values()))
    except Exception:  # noqa: BLE001 - a private counter: absent in other torch versions
        return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", choices=SIDES, required=True)
    ap.add_argument("--result", required=True)
    ap.add_argument("--script", default="")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--window-start", type=int, default=1,
                    help="count from the end of this optimizer step to the end of the next one")
    ap.add_argument("rest", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    rest = a.rest[1:] if a.rest[:1] == ["--"] else a.rest

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    sys.path.insert(0, str(HERE.parent))
    from bench.opcount import StepWindow, emulate_cuda_optimizer_defaults, pause_during_data_loading

    if not torch.cuda.is_available():
        emulate_cuda_optimizer_defaults()

    window = StepWindow(start=a.window_start).install()
    pause_during_data_loading(lambda: window.counter)
    res: dict = {"side": a.side, "ok": False}
    try:
        if a.side == "script":
            from bench._launch import _torchvision_or_shim

            res["torchvision"] = _torchvision_or_shim()
            import runpy

            sys.argv = [a.script] + rest
            runpy.run_path(a.script, run_name="__main__")
        else:
            from bench.ours import run_from_file

            run_from_file(rest[0])
    except StepWindow.Finished:
        pass
    except SystemExit as e:
        if e.code not in (0, None):
            res["error"] = f"SystemExit({e.code})"
    except BaseException as e:  # noqa: BLE001 - recorded in the result
        res["error"] = f"{e.__class__.__name__}: {e}"
        res["traceback"] = traceback.format_exc()[-4000:]
    finally:
        window.remove()
        if window.done and window.counter is not None:
            res.update(window.counter.summary())
            res["ok"] = "error" not in res
        elif "error" not in res:
            res["error"] = f"the run ended after {window.steps} optimizer step(s), before the counted window"
        if a.side == "ours-compiled":
            res.update(_compiled_kernels())
        res["max_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        Path(a.result).write_text(json.dumps(res, indent=1))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
