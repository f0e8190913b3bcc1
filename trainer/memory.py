"""Peak GPU memory of a run, estimated before it starts, and what to change when it will not fit.

peak ≈ fixed part (UNet weights in the compute dtype + allocator/workspace, + text encoders when they
train) + activations per image × batch, the activations scaling with the pixel count. The anchors come
from FACTS.md's H100 measurements (2026-11-27, random-weight SD-shaped models, bf16):

- SD1.5 @512: guide's script 3.74 GB at batch 1, 6.28 GB at batch 4 → ~0.85 GB activations per image
  without checkpointing; bare UNet+LoRA with gradient checkpointing, batch 4: 2.7 GB → ~0.2 GB per image.
- SDXL @1024: bare UNet+LoRA with gradient checkpointing, batch 4: 7.9 GB → ~0.62 GB per image.

Everything else (SDXL without checkpointing, fp32, text-encoder training, other resolutions) is scaled
from those and is an ESTIMATE, marked as such: no GPU was lent to the change that wrote this table, so
it could not be measured per GPU. `basis` says which.
"""
from __future__ import annotations

from dataclasses import dataclass

GB = 1e9
# per family: UNet params, text-encoder params (all encoders), native resolution
_PARAMS = {"sd15": (0.86e9, 0.123e9, 512), "sd2": (0.866e9, 0.340e9, 768), "sdxl": (2.57e9, 0.817e9, 1024)}
# activations per image at the native resolution, bf16, GB: (without checkpointing, with checkpointing)
_ACT = {"sd15": (0.85, 0.20), "sd2": (0.85 * 2.25, 0.20 * 2.25), "sdxl": (0.62 * 4.25, 0.62)}
_MEASURED = {("sd15", False), ("sd15", True), ("sdxl", True)}  # (family, checkpointing) with an H100 anchor
_OVERHEAD_GB = 0.75  # CUDA context, cuBLAS/cuDNN workspaces, allocator slack (script b1 3.74 − weights − 1 image)


@dataclass(frozen=True)
class Estimate:
    gb: float
    basis: str  # "measured anchor (H100), scaled" or "estimate"


def estimate_peak(family: str, resolution: int, batch: int, precision: str, checkpointing: bool,
                  train_text_encoder: bool) -> Estimate:
    fam = family if family in _PARAMS else "sd15"
    unet_p, te_p, native = _PARAMS[fam]
    width = 4 if precision == "no" else 2  # bytes per weight / activation element
    act = _ACT[fam][1 if checkpointing else 0] * (width / 2) * (resolution / native) ** 2
    fixed = unet_p * width / GB + _OVERHEAD_GB
    if train_text_encoder:
        fixed += te_p * width / GB + 0.1 * batch
    gb = fixed + act * batch
    exact = (fam, checkpointing) in _MEASURED and precision != "no" and not train_text_encoder \
        and resolution == native
    return Estimate(gb, "measured anchor (H100), scaled to this batch" if exact else "estimate (scaled, not measured)")


def fit_advice(est: Estimate, free_gb: float, *, batch: int, checkpointing: bool, resolution: int,
               train_text_encoder: bool) -> str | None:
    """None when the run should fit; else what to change, as the user would say it."""
    if est.gb <= free_gb * 0.95:
        return None
    fixes = []
    if not checkpointing:
        fixes.append("turn gradient checkpointing on")
    if batch > 1:
        fixes.append(f"lower the batch to {max(1, batch // 2)} (raise gradient accumulation to keep the effective batch)")
    if train_text_encoder:
        fixes.append("turn text-encoder training off")
    if resolution > 512:
        fixes.append(f"lower the resolution to {max(512, resolution - 256)}")
    fixes.append("free GPU memory (unload other models)")
    return (f"This run needs ~{est.gb:.1f} GB of GPU memory ({est.basis}); {free_gb:.1f} GB are free: "
            + "; or ".join(fixes[:3]) + ".")
