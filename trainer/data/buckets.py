"""Aspect-ratio buckets: portrait and landscape pictures train at their own shape, not a square crop.

A bucket is a (width, height) pair of multiples of `step` (64: the VAE's factor 8 times the UNet's
three downsamplings, so every latent size divides cleanly), with an area at most resolution² (memory
stays what the resolution promises) and as close to it as the step allows, and an aspect ratio at most
MAX_ASPECT (beyond that, pictures are cropped to the widest bucket). Each picture goes to the bucket
whose aspect ratio is nearest on a log scale (2:1 and 1:2 are equally far from square).
"""
from __future__ import annotations

import logging
import math

log = logging.getLogger("lora_studio.data")

MAX_ASPECT = 2.5


def bucket_set(resolution: int, step: int = 64, max_aspect: float = MAX_ASPECT) -> list[tuple[int, int]]:
    """All buckets for `resolution`, sorted from the tallest to the widest; the square one included."""
    if resolution <= 0 or step <= 0:
        raise ValueError(f"resolution ({resolution}) and step ({step}) must be positive")
    step = min(step, resolution)  # tiny smoke-test resolutions (32 px) get one square bucket
    area = resolution * resolution
    side = (resolution // step) * step
    out = {(side, side)}
    w = step
    while w <= area // step:
        h = (area // w) // step * step  # the largest height that keeps the area within resolution²
        if h >= step and max(w / h, h / w) <= max_aspect:
            out.add((w, h))
            out.add((h, w))
        w += step
    # keep, for each aspect ratio, only the bucket with the largest area
    best: dict[float, tuple[int, int]] = {}
    for b in out:
        r = round(b[0] / b[1], 6)
        if r not in best or b[0] * b[1] > best[r][0] * best[r][1]:
            best[r] = b
    return sorted(best.values(), key=lambda b: b[0] / b[1])


def nearest_bucket(size: tuple[int, int], buckets: list[tuple[int, int]]) -> tuple[int, int]:
    w, h = size
    if w <= 0 or h <= 0:
        raise ValueError(f"image size {size} is not positive")
    target = math.log(w / h)
    # ties go to the larger bucket, then the squarer one: deterministic whatever the order given
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - target), -b[0] * b[1], abs(b[0] - b[1])))


def plan_buckets(sizes: list[tuple[int, int]], resolution: int, step: int = 64) -> list[tuple[int, int]]:
    """For each image (width, height), the (bucket_width, bucket_height) it trains at."""
    buckets = bucket_set(resolution, step)
    plan = [nearest_bucket(s, buckets) for s in sizes]
    if plan:
        counts: dict[tuple[int, int], int] = {}
        for b in plan:
            counts[b] = counts.get(b, 0) + 1
        log.debug("buckets at %d px: %s", resolution,
                 ", ".join(f"{w}x{h}: {n}" for (w, h), n in sorted(counts.items(), key=lambda kv: -kv[1])))
    return plan


def square_plan(sizes: list[tuple[int, int]], resolution: int) -> list[tuple[int, int]]:
    """The no-bucket alternative (every picture cropped square), for comparison and for `bucketed=False`."""
    return [(resolution, resolution)] * len(sizes)
