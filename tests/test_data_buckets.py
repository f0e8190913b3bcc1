"""Aspect-ratio buckets: portrait and landscape pictures keep their shape instead of a square crop."""
from __future__ import annotations

import math
import random

import pytest

from trainer.data import MAX_ASPECT, bucket_set, plan_buckets


@pytest.mark.parametrize("resolution", [512, 640, 768, 1024])
def test_every_image_lands_within_one_bucket_step(resolution):
    rng = random.Random(resolution)
    sizes = [(rng.randint(300, 4000), rng.randint(300, 4000)) for _ in range(400)]
    sizes = [s for s in sizes if max(s[0] / s[1], s[1] / s[0]) <= MAX_ASPECT]
    buckets = bucket_set(resolution)
    logs = [math.log(w / h) for w, h in buckets]
    plan = plan_buckets(sizes, resolution)
    assert len(plan) == len(sizes)
    for (w, h), (bw, bh) in zip(sizes, plan):
        assert bw % 64 == 0 and bh % 64 == 0
        assert 0.8 * resolution ** 2 <= bw * bh <= resolution ** 2
        a, k = math.log(w / h), buckets.index((bw, bh))
        # within one bucket step: between the neighbouring buckets' aspect ratios ...
        assert (logs[k - 1] if k > 0 else -math.inf) <= a <= (logs[k + 1] if k + 1 < len(logs) else math.inf)
        # ... and no bucket fits better
        assert abs(a - logs[k]) <= min(abs(a - x) for x in logs) + 1e-12


def test_orientation_is_kept_and_extremes_clamp_to_the_widest_bucket():
    plan = plan_buckets([(1024, 512), (512, 1024), (777, 777), (5000, 500), (500, 5000)], 512)
    assert plan[0][0] > plan[0][1] and plan[1][0] < plan[1][1] and plan[2] == (512, 512)
    widest = max(bucket_set(512), key=lambda b: b[0] / b[1])
    assert plan[3] == widest and plan[4] == widest[::-1]
    assert max(b[0] / b[1] for b in bucket_set(512)) <= MAX_ASPECT


def test_buckets_are_symmetric_and_deterministic():
    b = bucket_set(768)
    assert set(b) == {(h, w) for w, h in b} and (768, 768) in b
    sizes = [(800, 600), (600, 800), (1000, 1000)]
    assert plan_buckets(sizes, 768) == plan_buckets(sizes[::-1], 768)[::-1]


def test_tiny_smoke_test_resolutions_get_one_square_bucket():
    assert bucket_set(32) == [(32, 32)] and plan_buckets([(100, 50)], 64) == [(64, 64)]


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        plan_buckets([(0, 10)], 512)
    with pytest.raises(ValueError):
        bucket_set(0)
