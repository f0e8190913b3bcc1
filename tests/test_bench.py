"""bench/run_benchmark.py: the table and JSON it writes (fields present and finite; no timing asserted).

The guide-script side runs only where `datasets` is installed and LORA_STUDIO_DIFFUSERS_REPO names a diffusers
checkout or bare git repository (the script is never part of this repository).
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import pytest

from bench import run_benchmark as rb
from bench.common import ANCHOR_PATHS, parse_config

DIFFUSERS_REPO = os.environ.get("LORA_STUDIO_DIFFUSERS_REPO", "")
ROW_FIELDS = ("steps_per_s", "images_per_s", "tflops", "pct_of_peak", "time_to_first_step_s", "peak_rss_gb")


def _finite_positive(row: dict, fields=ROW_FIELDS) -> None:
    for k in fields:
        v = row.get(k)
        assert isinstance(v, (int, float)) and math.isfinite(v) and v > 0, f"{k} = {v!r}"


def test_config_names():
    c = parse_config("sdxl-1024-b1-gc")
    assert (c.family, c.tiny, c.resolution, c.batch, c.gradient_checkpointing) == ("sdxl", False, 1024, 1, True)
    assert parse_config("tiny-sd15-64-b4").model_key == "tiny-sd15"
    for bad in ("sd3-512-b1", "sd15-500-b1", "sd15-512"):
        with pytest.raises(ValueError):
            parse_config(bad)


def test_steady_state_leaves_out_warmup_steps():
    # step ends at 0 (step 1), then 1.0 s (a slow second step), then every 0.1 s
    res = {"ok": True, "step_times_s": [0.0, 1.0, 1.1, 1.2, 1.3, 1.4], "time_to_first_step_s": 5.0,
           "max_rss": 2e9}
    s = rb.summarize(res, batch=4, warmup=2, flops_per_image=1e12, peak_tflops=100.0, device="cpu")
    assert s["measured_steps"] == 4 and s["step_s"] == pytest.approx(0.1)
    assert s["images_per_s"] == pytest.approx(40) and s["tflops"] == pytest.approx(40)
    assert s["pct_of_peak"] == pytest.approx(40) and s["peak_rss_gb"] == pytest.approx(2)


def test_torchvision_stand_in_matches_the_scripts_use():
    import sys

    from PIL import Image

    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "torchvision" or k.startswith("torchvision.")}
    sys.path.insert(0, str(Path(rb.__file__).parent / "_shim"))
    try:
        import importlib

        tv = importlib.import_module("torchvision.transforms")
        assert "_shim" in tv.__file__
        t = tv.Compose([tv.Resize(32, interpolation=tv.InterpolationMode.LANCZOS), tv.CenterCrop(32),
                        tv.Lambda(lambda x: x), tv.ToTensor(), tv.Normalize([0.5], [0.5])])
        x = t(Image.new("RGB", (64, 48), (255, 0, 0)))
        assert tuple(x.shape) == (3, 32, 32) and x.min() >= -1 and x.max() <= 1 and float(x[0].mean()) == 1.0
    finally:
        sys.path.remove(str(Path(rb.__file__).parent / "_shim"))
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def test_ours_side_tiny_cpu(tmp_path):
    out = tmp_path / "results.json"
    rc = rb.main(["--device", "cpu", "--configs", "tiny-sd15-64-b1", "--steps", "3", "--images", "4",
                  "--sides", "ours", "--work-dir", str(tmp_path / "work"), "--out", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    for k in ("command", "machine", "peak", "timing", "memory", "configs", "markdown"):
        assert k in report
    assert report["machine"]["torch"] and report["peak"]["tflops"] > 0
    (entry,) = report["configs"]
    assert entry["flops_per_image"] > 0 and entry["config"]["name"] == "tiny-sd15-64-b1"
    ours = entry["ours"]
    assert ours["ok"] and ours["steps_done"] == 3
    _finite_positive(ours)
    job = ours["job"]
    assert math.isfinite(job["first_loss"]) and math.isfinite(job["last_loss"]) and job["steps"] == 3
    assert entry.get("script") is None
    for col in ("steps/s", "images/s", "TFLOP/s", "% of peak", "peak RSS", "time to first step", "ours ÷ script"):
        assert col in report["markdown"]
    assert "| ours |" in report["markdown"]


@pytest.mark.skipif(not DIFFUSERS_REPO, reason="LORA_STUDIO_DIFFUSERS_REPO (a diffusers checkout or bare repo) not set")
def test_script_flags_exist_in_the_snapshot(tmp_path):
    scripts, info = rb.find_anchor_scripts(DIFFUSERS_REPO, None, None, tmp_path / "anchor")
    assert set(scripts) == set(ANCHOR_PATHS)
    cfg = parse_config("tiny-sdxl-64-b1-gc")
    args = rb.script_args("sdxl", Path("m"), Path("d"), Path("o"), cfg, 3, 4, "no")
    for fam, path in scripts.items():
        text = path.read_text()
        for flag in (a for a in args if a.startswith("--")):
            assert f'"{flag}"' in text, f"{path.name} has no {flag}"


@pytest.mark.skipif(importlib.util.find_spec("datasets") is None, reason="the guide's script needs `datasets`")
@pytest.mark.skipif(not DIFFUSERS_REPO, reason="LORA_STUDIO_DIFFUSERS_REPO (a diffusers checkout or bare repo) not set")
def test_both_sides_tiny_cpu(tmp_path):
    out = tmp_path / "results.json"
    rc = rb.main(["--device", "cpu", "--diffusers-repo", DIFFUSERS_REPO, "--configs", "tiny-sd15-64-b1",
                  "--steps", "3", "--images", "4", "--work-dir", str(tmp_path / "work"), "--out", str(out)])
    report = json.loads(out.read_text())
    (entry,) = report["configs"]
    assert entry["script"]["ok"], entry["script"].get("log_tail")
    assert rc == 0
    _finite_positive(entry["script"])
    _finite_positive(entry["ours"])
    assert math.isfinite(entry["ratio_images_per_s"]) and entry["ratio_images_per_s"] > 0
    assert report["anchor"]["commit"]
