"""Training FLOPs per image (counted) and the device's matmul peak (measured)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # what the guide's script adapts


def train_flops_per_image(config_root: Path, resolution: int, rank: int, targets=UNET_TARGETS) -> float:
    """FLOPs of one UNet forward + backward with attention LoRA, per image, counted on the meta device.

    The meta device runs attention as plain matmuls, which torch.utils.flop_counter counts (its CPU flash
    kernel is not counted). Only the UNet is counted: the guide's script also runs the VAE encoder and the
    text encoder every step, work ours does once per image; that extra work is overhead, not training FLOPs.
    Gradient checkpointing's recompute is not counted either (model FLOPs, as in MFU).
    """
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from trainer.lora import AdapterSpec, inject

    cfg = json.loads((Path(config_root) / "unet" / "config.json").read_text())
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(cfg)
        inject(unet, AdapterSpec(rank, float(rank), tuple(targets)))
        h = resolution // 8
        x = torch.randn(1, cfg.get("in_channels", 4), h, h)
        emb = torch.randn(1, 77, cfg["cross_attention_dim"])
        t = torch.tensor([500])
        kw = {}
        if cfg.get("addition_embed_type") == "text_time":
            n_time = 6 * cfg["addition_time_embed_dim"]
            kw["added_cond_kwargs"] = {"text_embeds": torch.randn(1, cfg["projection_class_embeddings_input_dim"] - n_time),
                                       "time_ids": torch.randn(1, 6)}
        with FlopCounterMode(display=False) as fc:
            out = unet(x, t, emb, **kw).sample
            out.float().pow(2).mean().backward()
    return float(fc.get_total_flops())


def measure_peak_tflops(device: str, threads: int | None = None) -> dict:
    """Dense matmul throughput: bf16 8192³ on a GPU, fp32 1024³ on the CPU (with the runs' thread count)."""
    if device.startswith("cuda"):
        n, dtype, reps = 8192, torch.bfloat16, 20
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(3):
            a @ b
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / reps
        del a, b
        torch.cuda.empty_cache()
        what = f"bf16 matmul {n}x{n}x{n}, mean of {reps} after 3 warm-ups"
    else:
        old = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        n, reps = 1024, 20
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(3):
            a @ b
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        dt = (time.perf_counter() - t0) / reps
        torch.set_num_threads(old)
        what = f"fp32 matmul {n}x{n}x{n} on {threads or old} thread(s), mean of {reps} after 3 warm-ups"
    return {"tflops": 2 * n ** 3 / dt / 1e12, "how": what, "source": "measured"}
