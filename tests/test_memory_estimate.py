"""The memory estimate before a run: anchored on FACTS.md's H100 figures, monotone, and actionable."""
from __future__ import annotations

from trainer.memory import estimate_peak, fit_advice
from trainer.presets import PRESETS, preset_peaks


def test_anchors_land_near_the_measured_h100_figures():
    # FACTS.md: the script at SD1.5 @512 bf16 used 3.74 / 6.28 GB at batch 1 / 4 (it also holds VAE and TE);
    # a bare UNet+LoRA step with checkpointing at SDXL @1024 batch 4: 7.9 GB
    assert 3.0 < estimate_peak("sd15", 512, 1, "bf16", False, False).gb < 3.8
    assert 5.5 < estimate_peak("sd15", 512, 4, "bf16", False, False).gb < 6.5
    assert 7.5 < estimate_peak("sdxl", 1024, 4, "bf16", True, False).gb < 8.6
    assert estimate_peak("sdxl", 1024, 1, "bf16", True, False).gb <= 10  # the bar, as estimated


def test_more_work_needs_more_memory_and_unmeasured_cases_say_estimate():
    a = estimate_peak("sdxl", 1024, 1, "bf16", True, False)
    assert estimate_peak("sdxl", 1024, 2, "bf16", True, False).gb > a.gb
    assert estimate_peak("sdxl", 1024, 1, "bf16", False, False).gb > a.gb
    assert estimate_peak("sdxl", 1024, 1, "no", True, False).gb > a.gb
    assert estimate_peak("sdxl", 1024, 1, "bf16", True, True).gb > a.gb
    assert "estimate" in estimate_peak("sdxl", 1024, 1, "bf16", False, False).basis
    assert "measured" in a.basis


def test_advice_names_the_need_the_free_memory_and_what_to_change():
    e = estimate_peak("sdxl", 1024, 2, "bf16", False, True)
    msg = fit_advice(e, 7.0, batch=2, checkpointing=False, resolution=1024, train_text_encoder=True)
    assert f"~{e.gb:.1f} GB" in msg and "7.0 GB are free" in msg and "gradient checkpointing on" in msg
    assert fit_advice(estimate_peak("sd15", 512, 1, "bf16", True, False), 24.0, batch=1, checkpointing=True,
                      resolution=512, train_text_encoder=False) is None


def test_every_preset_states_its_peak():
    for key in PRESETS:
        peaks = preset_peaks(key)
        assert set(peaks) == {"sd15", "sdxl"} and all("GB" in v for v in peaks.values())
