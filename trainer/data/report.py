"""The guide's dataset checklist, made automatic: `check_dataset` runs before any model loads.

Checked: where the folder is (allowed roots), what it holds (discover.py), every picture decoded
once (unreadable, too large, blurry, exact and near duplicates, too small for its training size, too
elongated), the count against the guide's floor (20) and the preset's range, and the prompts against
the trigger token. Only an empty dataset blocks; everything else, unsafe paths included, skips its item
or warns.
"""
from __future__ import annotations

import logging
import statistics
from pathlib import Path

from ..errors import DatasetError
from . import findings as F
from .buckets import MAX_ASPECT, plan_buckets, square_plan
from .captions import apply_trigger
from .discover import Dataset, check_root, discover, display_path, no_images_finding, trigger_findings
from .findings import DatasetCheckError, DatasetReport, Finding
from .quality import (BLUR_THRESHOLD, NEAR_DUPLICATE_BITS, SHARPNESS_SIDE, ImageStats, blurry, inspect_image,
                      near_duplicates)
from .safety import confine

log = logging.getLogger("lora_studio.data")

# The guide: "Mindestens 20–30 hochwertige Bilder."
GUIDE_MIN_IMAGES = 20
# Upscaling by up to 5 % is invisible after the VAE; more makes the picture soft.
UPSCALE_TOLERANCE = 1.05
# Without buckets every picture is cropped square; beyond 3:2 a third of it is lost.
SQUARE_CROP_ASPECT = 1.5


def resolve_root(root: str | Path, allowed_roots: list[str | Path] | None) -> Path:
    """Confine first (a path outside the roots is refused before anything about it is revealed), then check it."""
    if allowed_roots is None:  # headless: the given folder is its own root
        p = Path(str(root)).expanduser() if root is not None and str(root).strip() else None
        if p is None:
            return check_root(root)
        p = p if p.is_absolute() else Path.cwd() / p
        return check_root(confine(p, [p]))
    return check_root(confine(root, allowed_roots))


def check_dataset(root: str | Path, *, resolution: int, trigger_token: str = "", placeholder: str = "<my_token>",
                  preset_key: str | None = None, allowed_roots: list[str | Path] | None = None,
                  bucketed: bool = True, quick: bool = False) -> tuple[Dataset, DatasetReport]:
    """Discover, decode and check a dataset. Returns the usable samples and the report.

    `allowed_roots`: folders the dataset must lie in (the nodes pass ComfyUI's input directory);
    None means the given folder itself (headless). LORA_STUDIO_ALLOWED_ROOTS adds more.
    `bucketed`: judge picture sizes against their aspect-ratio buckets (plan_buckets) instead of a square crop.
    `quick`: only what the folder's names and captions tell, no picture opened (load_dataset).
    Raises DatasetError for a missing/unreadable/disallowed folder, DatasetCheckError (a DatasetError with
    `.report`) for blocking problems; its message is the report's text.
    """
    ds = discover(resolve_root(root, allowed_roots))
    report = DatasetReport(str(ds.root), list(ds.problems), list(ds.findings))
    raw_captions = [s.caption for s in ds.samples]
    for s in ds.samples:
        s.caption = apply_trigger(s.caption, trigger_token, placeholder)
    stats = [] if quick else _inspect(ds, report)
    if not ds.samples:
        report.problems.append(no_images_finding(ds.root))
    else:
        report.warnings += trigger_findings(ds, raw_captions, trigger_token, placeholder)
        if not quick:
            _count(ds, report, preset_key)
            _pictures(ds, stats, report, resolution, bucketed)
    report.stats = _summary(ds, report, resolution, bucketed, skipped=len(raw_captions) - len(ds.samples))
    ds.warnings = [str(w) for w in report.warnings]
    for f in report.problems + report.warnings:  # DEBUG: the caller shows the report, once
        log.debug("dataset %s: [%s] %s", ds.root.name, f.code, f)
    log.log(logging.WARNING if report.problems or report.warnings else logging.INFO,
            "dataset %s: %d usable images, %d problem(s), %d warning(s)", ds.root, len(ds.samples),
            len(report.problems), len(report.warnings))
    if report.problems:
        raise DatasetCheckError(report)
    return ds, report


def load_dataset(root: str | Path, trigger_token: str = "", placeholder: str = "<my_token>") -> Dataset:
    """The usable samples with their captions, checked as check_dataset does but without opening a picture.
    Raises DatasetError for unsafe paths or no usable images."""
    return check_dataset(root, resolution=0, trigger_token=trigger_token, placeholder=placeholder, quick=True)[0]


def _inspect(ds: Dataset, report: DatasetReport) -> list[ImageStats]:
    """Decode every picture once; the unreadable ones leave the dataset with a warning."""
    kept, stats = [], []
    for s in ds.samples:
        try:
            st = inspect_image(s.path)
        except DatasetError as e:
            report.warnings.append(Finding(F.UNREADABLE_IMAGE, display_path(ds.root, s.path),
                                           "skipped: " + _strip_name(str(e), s.path.name)))
            continue
        except OSError as e:  # the sha256 pass: a file that vanished or became unreadable meanwhile
            report.warnings.append(Finding(F.UNREADABLE_IMAGE, display_path(ds.root, s.path), f"cannot be read "
                                           f"({e.strerror or e}); skipped. Fix: check the file and its permissions."))
            continue
        s.size = st.size
        kept.append(s)
        stats.append(st)
    ds.samples = kept
    return stats


def _count(ds: Dataset, report: DatasetReport, preset_key: str | None) -> None:
    n = len(ds.samples)
    preset = None
    if preset_key:
        from ..presets import PRESETS, get_preset

        preset = get_preset(preset_key)
        fitting = [p.title for p in PRESETS.values() if p.min_images <= n <= p.max_images]
        span = f"'{preset.title}' is meant for ({preset.min_images}–{preset.max_images})"
        better = f"choose '{fitting[0]}' or " if fitting and preset.title not in fitting else ""
        if n < preset.min_images:
            report.warnings.append(Finding(F.TOO_FEW_IMAGES, "", f"{n} images are fewer than the preset {span}. "
                                           f"Fix: {better}add pictures."))
            return
        if n > preset.max_images:
            report.warnings.append(Finding(F.TOO_MANY_IMAGES, "", f"{n} images are more than the preset {span}; "
                                           f"the run's steps may not cover them. Fix: {better}keep the best "
                                           f"{preset.max_images}."))
    if n < GUIDE_MIN_IMAGES:
        report.warnings.append(Finding(F.TOO_FEW_IMAGES, "", f"{n} images: the guide asks for at least "
                                       f"{GUIDE_MIN_IMAGES}–30 good pictures; fewer tend to copy the pictures "
                                       "instead of learning the concept. Fix: add varied pictures of the concept."))


def _pictures(ds: Dataset, stats: list[ImageStats], report: DatasetReport, resolution: int, bucketed: bool) -> None:
    rel = [display_path(ds.root, s.path) for s in ds.samples]
    sizes = [s.size for s in ds.samples]
    plan = plan_buckets(sizes, resolution) if bucketed else square_plan(sizes, resolution)
    limit = MAX_ASPECT if bucketed else SQUARE_CROP_ASPECT
    warn = report.warnings.append
    small = set()
    for i, ((w, h), (bw, bh)) in enumerate(zip(sizes, plan)):
        up = max(bw / w, bh / h)
        if up > UPSCALE_TOLERANCE:
            small.add(i)
            warn(Finding(F.LOW_RESOLUTION, rel[i], f"is {w}×{h} px, smaller than its training size {bw}×{bh} "
                         f"(upscaled ×{up:.2f}, it trains soft). Fix: use a larger original or a lower resolution."))
        aspect = max(w / h, h / w)
        if aspect > limit:
            kept = min(1.0, limit / aspect) if bucketed else 1 / aspect
            warn(Finding(F.EXTREME_ASPECT, rel[i], f"is {w}×{h} ({aspect:.1f}:1); training crops it to "
                         f"{'its bucket' if bucketed else 'a square'} and keeps only {kept:.0%} of it. "
                         "Fix: crop it yourself to the part that matters."))
    for i, why in blurry(stats, skip=small):
        warn(Finding(F.BLURRY, rel[i], f"looks blurry: {why} (variance of the Laplacian at {SHARPNESS_SIDE}×"
                     f"{SHARPNESS_SIDE} px). Fix: replace it with a sharp picture or remove it; ignore this for "
                     "soft styles on purpose."))
    first_by_hash: dict[str, int] = {}
    for i, st in enumerate(stats):
        if st.sha256 in first_by_hash:
            warn(Finding(F.EXACT_DUPLICATE, rel[i], f"is byte-identical to '{rel[first_by_hash[st.sha256]]}', so "
                         "that picture trains twice as often. Fix: delete one copy (use a repeat folder to weight "
                         "pictures on purpose)."))
        else:
            first_by_hash[st.sha256] = i
    for i, j, d in near_duplicates(stats):
        if stats[i].sha256 != stats[j].sha256:
            warn(Finding(F.NEAR_DUPLICATE, rel[j], f"looks almost the same as '{rel[i]}' (perceptual hash distance "
                         f"{d} of 64, threshold {NEAR_DUPLICATE_BITS}). Fix: keep the better one unless they show "
                         "the concept differently."))


def _summary(ds: Dataset, report: DatasetReport, resolution: int, bucketed: bool, skipped: int) -> dict:
    n = len(ds.samples)
    sizes = [s.size for s in ds.samples if s.size]
    per_epoch = sum(s.repeats for s in ds.samples)
    lines = [f"{n} usable image(s)" + (f", {skipped} skipped" if skipped else "")
             + (f"; {per_epoch} samples per epoch with kohya repeats" if per_epoch != n else "")]
    stats: dict = {"images": n, "skipped": skipped, "samples_per_epoch": per_epoch,
                   "problems": len(report.problems), "warnings": len(report.warnings),
                   "negative_prompts": len(ds.negative_prompts)}
    if sizes:
        land = sum(1 for w, h in sizes if w > h * 1.1)
        port = sum(1 for w, h in sizes if h > w * 1.1)
        short = [min(w, h) for w, h in sizes]
        plan = plan_buckets(sizes, resolution) if bucketed else square_plan(sizes, resolution)
        buckets: dict[str, int] = {}
        for bw, bh in plan:
            buckets[f"{bw}x{bh}"] = buckets.get(f"{bw}x{bh}", 0) + 1
        area = lambda s: s[0] * s[1]  # noqa: E731
        stats.update(min_size=list(min(sizes, key=area)), max_size=list(max(sizes, key=area)),
                     median_short_side=statistics.median(short), landscape=land, portrait=port,
                     square=len(sizes) - land - port, buckets=buckets)
        lines.append(f"sizes {stats['min_size'][0]}×{stats['min_size'][1]} to {stats['max_size'][0]}×"
                     f"{stats['max_size'][1]} px; {land} landscape, {port} portrait, {stats['square']} square")
        lines.append(f"training at {resolution} px in {len(buckets)} size bucket(s): "
                     + ", ".join(f"{k} ×{v}" for k, v in sorted(buckets.items(), key=lambda kv: -kv[1])))
    if ds.negative_prompts:
        lines.append(f"{len(ds.negative_prompts)} negative prompt(s) for previews")
    lines.append(f"thresholds: blurry below {BLUR_THRESHOLD:.0f}, near duplicate at ≤ {NEAR_DUPLICATE_BITS} bits")
    stats["summary"] = lines
    return stats


def _strip_name(message: str, name: str) -> str:
    """load_rgb's messages start with the file name; the finding carries it already."""
    prefix = f"{name}: "
    return message[len(prefix):] if message.startswith(prefix) else message
