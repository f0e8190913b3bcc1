"""Whether and how to torch.compile the UNet for a run, with a fallback to eager that says why.

Compiled: the UNet in channels_last (on the default layout inductor copies every 3×3 conv weight to
channels_last on each call, measured 2.2× slower — FACTS.md), fixed shapes (one graph per aspect bucket),
on a GPU `mode="reduce-overhead"` (CUDA graphs: one launch for the whole forward / backward), and
inductor's persistent cache in the pack's cache folder so a second run pays seconds, not minutes.

`compile: auto` compiles only where the warm-up is paid back within the run. The figures are FACTS.md's
H100 measurements (SD1.5 bf16 batch 4: eager 22.9 img/s, compiled 37.1 img/s after a 155 s compile; 4–12 s
with a warm cache); they are not measured per GPU here (no GPU was lent to this change), so `auto` uses
them as an estimate for every CUDA card, and never compiles on the CPU (minutes of compiling for a
tiny-model run).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

log = logging.getLogger("lora_studio.speed")

COLD_COMPILE_S = 340.0  # worst cold compile measured for the SD1.5 UNet with LoRA (FACTS.md, 202–338 s)
WARM_COMPILE_S = 12.0  # the same with inductor's cache warm (4–12 s)
SAVED_PER_IMAGE_S = 1 / 22.9 - 1 / 37.1  # H100 bf16 b4: eager vs compiled seconds per image
MAX_BUCKET_GRAPHS = 32  # one compiled graph per training size; more sizes than this run eager after the limit


def cache_dir(root: Path) -> Path:
    return Path(root) / "inductor"


def decide(mode: str, device: torch.device, steps: int, images_per_step: int, cache: Path) -> tuple[bool, str]:
    """(compile?, why) for this run."""
    if mode == "off":
        return False, "compile off"
    if mode == "on":
        return True, "compile on (asked)"
    if device.type != "cuda":
        return False, "compile auto: eager on the CPU (compiling costs minutes, CUDA graphs need a GPU)"
    warm = cache.is_dir() and any(cache.iterdir())
    cost = WARM_COMPILE_S if warm else COLD_COMPILE_S
    saved = steps * images_per_step * SAVED_PER_IMAGE_S
    if saved > cost:
        return True, (f"compile auto: {steps} steps save ~{saved:.0f} s against a ~{cost:.0f} s "
                      f"{'warm' if warm else 'cold'} compile (estimate from H100 figures)")
    return False, (f"compile auto: eager — {steps} steps would save ~{saved:.0f} s, less than a ~{cost:.0f} s "
                   f"{'warm' if warm else 'cold'} compile (estimate from H100 figures)")


def compile_unet(unet: torch.nn.Module, device: torch.device, cache: Path):
    """channels_last + torch.compile; returns the compiled callable (compilation itself happens on first call)."""
    cache.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache))  # read when inductor first compiles
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, MAX_BUCKET_GRAPHS)
    unet.to(memory_format=torch.channels_last)
    mode = "reduce-overhead" if device.type == "cuda" else None
    return torch.compile(unet, mode=mode, dynamic=False, fullgraph=False)


class UnetCaller:
    """Calls the compiled UNet; the first failure to compile switches to eager for the rest of the run and
    says why through `message`."""

    def __init__(self, eager, compiled, message):
        self.eager, self.compiled, self.message = eager, compiled, message
        self.fallback_reason: str | None = None

    def __call__(self, *args, **kwargs):
        if self.compiled is None:
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any compiler failure (no C compiler, an unsupported op, …)
            if isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e):
                raise
            self.fallback_reason = f"{e.__class__.__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            self.message(f"torch.compile failed ({self.fallback_reason}); training continues eager, which gives the "
                         "same LoRA a little slower. Set compile to 'off' to skip the attempt.")
            self.compiled = None
            return self.eager(*args, **kwargs)
