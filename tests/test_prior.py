"""Prior preservation: class images are rendered once, cached by their settings, or taken from the user."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import tree
from trainer.config import TrainConfig
from trainer.errors import DatasetError, TrainingCancelled
from trainer.prior import class_images

MODEL_ID = "0" * 64  # stands in for the base model's sha256


@pytest.fixture(scope="module")
def bm(tiny_sd15):
    from trainer.models import load_base_model

    return load_base_model(tiny_sd15)


def make_cfg(**changes) -> TrainConfig:
    base = dict(test_mode=True, resolution=64, class_sampling_steps=2, with_prior_preservation=True,
                class_prompt="a watercolor painting of a fox", num_class_images=2, class_seed=7)
    base.update(changes)
    return TrainConfig(**base).validate()


class Counter:
    """A stand-in renderer that records each (prompt, seed, width, height, steps) it is asked for."""

    def __init__(self, fail_on: int | None = None):
        self.calls: list[tuple] = []
        self.fail_on = fail_on

    def __call__(self, prompt, seed, width, height, steps):
        self.calls.append((prompt, seed, width, height, steps))
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise RuntimeError("renderer died")
        return Image.new("RGB", (width, height), (seed % 256, 0, 0))


def weights_digest(module: torch.nn.Module) -> float:
    return float(sum(p.double().sum() for p in module.parameters()))


def test_default_renderer_makes_valid_pngs_and_leaves_the_models_as_they_were(bm, tmp_path):
    bm.unet.train()  # the renderer must switch to eval for inference and give the flag back
    before = weights_digest(bm.unet)
    try:
        samples = class_images(make_cfg(), bm, "cpu", tmp_path, model_id=MODEL_ID)
    finally:
        unet_was_training = bm.unet.training
        bm.unet.eval()
    assert unet_was_training and not bm.vae.training and not bm.text_encoders[0].training
    assert weights_digest(bm.unet) == before and not any(p.requires_grad for p in bm.unet.parameters())
    assert [s.path.name for s in samples] == ["class_0000.png", "class_0001.png"]
    assert all(s.caption == "a watercolor painting of a fox" for s in samples)
    for s in samples:
        with Image.open(s.path) as im:
            assert (im.format, im.size, im.mode) == ("PNG", (64, 64), "RGB")
            lo, hi = zip(*im.getextrema())
            assert max(hi) > min(lo)  # a picture, not the flat black a NaN decode would give
    manifest = json.loads((samples[0].path.parent / "manifest.json").read_text())
    assert manifest["class_prompt"] == "a watercolor painting of a fox" and manifest["model_id"] == MODEL_ID
    assert [(i["file"], i["seed"]) for i in manifest["images"]] == [("class_0000.png", 7), ("class_0001.png", 8)]
    assert not [p for p in tree(tmp_path) if p.endswith(".tmp")]

    # image i depends on its own seed only: rendered again alone, it comes out the same
    first = Image.open(samples[1].path).convert("RGB").tobytes()
    samples[1].path.unlink()
    class_images(make_cfg(), bm, "cpu", tmp_path, model_id=MODEL_ID)
    assert Image.open(samples[1].path).convert("RGB").tobytes() == first


def test_rerun_reuses_and_only_missing_images_are_rendered(bm, tmp_path):
    first = Counter()
    samples = class_images(make_cfg(), bm, "cpu", tmp_path, model_id=MODEL_ID, generate=first)
    prompt = "a watercolor painting of a fox"
    assert first.calls == [(prompt, 7, 64, 64, 2), (prompt, 8, 64, 64, 2)]  # seed = class_seed + index

    again = Counter()
    assert class_images(make_cfg(), bm, "cpu", tmp_path, model_id=MODEL_ID, generate=again) == samples
    assert again.calls == []

    more = Counter()
    samples3 = class_images(make_cfg(num_class_images=3), bm, "cpu", tmp_path, model_id=MODEL_ID, generate=more)
    assert [c[1] for c in more.calls] == [9] and samples3[:2] == samples and len(samples3) == 3

    other = Counter()
    changed = class_images(make_cfg(class_prompt="a photo of a fox"), bm, "cpu", tmp_path, model_id=MODEL_ID,
                           generate=other)
    assert len(other.calls) == 2 and changed[0].path.parent != samples[0].path.parent

    for change in (dict(resolution=128), dict(class_sampling_steps=3), dict(class_seed=8)):
        c = Counter()
        class_images(make_cfg(**change), bm, "cpu", tmp_path, model_id=MODEL_ID, generate=c)
        assert len(c.calls) == 2, change
    c = Counter()
    class_images(make_cfg(), bm, "cpu", tmp_path, model_id="1" * 64, generate=c)  # another base model
    assert len(c.calls) == 2


def test_a_damaged_cached_image_is_rendered_again(bm, tmp_path):
    samples = class_images(make_cfg(), bm, "cpu", tmp_path, model_id=MODEL_ID, generate=Counter())
    samples[0].path.write_bytes(samples[0].path.read_bytes()[:40])  # cut off by a full disk
    c = Counter()
    class_images(make_cfg(), bm, "cpu", tmp_path, model_id=MODEL_ID, generate=c)
    assert [s for _, s, *_ in c.calls] == [7]
    assert Image.open(samples[0].path).size == (64, 64)


def test_a_crash_mid_render_keeps_finished_images_and_no_partial_file(bm, tmp_path):
    with pytest.raises(RuntimeError, match="renderer died"):
        class_images(make_cfg(num_class_images=3), bm, "cpu", tmp_path, model_id=MODEL_ID, generate=Counter(fail_on=2))
    names = {Path(p).name for p in tree(tmp_path)}
    assert "class_0000.png" in names and "class_0001.png" not in names and not any(n.endswith(".tmp") for n in names)
    c = Counter()
    class_images(make_cfg(num_class_images=3), bm, "cpu", tmp_path, model_id=MODEL_ID, generate=c)
    assert [s for _, s, *_ in c.calls] == [8, 9]


def test_cancel_stops_between_images(bm, tmp_path):
    from trainer.loop import Callbacks

    c = Counter()
    cb = Callbacks(should_stop=lambda: len(c.calls) >= 1)
    with pytest.raises(TrainingCancelled):
        class_images(make_cfg(), bm, "cpu", tmp_path, model_id=MODEL_ID, generate=c, callbacks=cb)
    assert len(c.calls) == 1 and len([p for p in tree(tmp_path) if p.endswith(".png")]) == 1


def test_class_data_dir_is_used_and_nothing_is_rendered(bm, tmp_path):
    folder = tmp_path / "class"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.png", "a.jpg", "sub/c.webp"):
        Image.new("RGB", (40, 30), (1, 2, 3)).save(folder / name)
    (folder / "a.txt").write_text("a caption file that class images ignore")
    (folder / ".hidden.png").write_bytes(b"not even an image")
    (folder / "broken.png").write_bytes(b"not an image")
    c = Counter()
    cache = tmp_path / "cache"
    samples = class_images(make_cfg(class_data_dir=str(folder), num_class_images=50), bm, "cpu", cache,
                           model_id=MODEL_ID, generate=c)
    assert c.calls == [] and not cache.exists()
    assert [s.path.relative_to(folder).as_posix() for s in samples] == ["a.jpg", "b.png", "sub/c.webp"]
    assert {s.caption for s in samples} == {"a watercolor painting of a fox"}
    capped = class_images(make_cfg(class_data_dir=str(folder), num_class_images=2), bm, "cpu", cache,
                          model_id=MODEL_ID, generate=c)
    assert [s.path.name for s in capped] == ["a.jpg", "b.png"]


def test_an_empty_class_data_dir_is_a_clear_error(bm, tmp_path):
    folder = tmp_path / "empty_class"
    folder.mkdir()
    (folder / "notes.txt").write_text("no pictures here")
    with pytest.raises(DatasetError) as e:
        class_images(make_cfg(class_data_dir=str(folder)), bm, "cpu", tmp_path / "cache", model_id=MODEL_ID,
                     generate=Counter())
    assert str(folder) in str(e.value) and "class_data_dir" in str(e.value) and "Fix:" in str(e.value)
    with pytest.raises(DatasetError, match="not a folder"):
        class_images(make_cfg(class_data_dir=str(tmp_path / "missing")), bm, "cpu", tmp_path, model_id=MODEL_ID)


def test_off_means_no_class_images(bm, tmp_path):
    c = Counter()
    cfg = make_cfg(with_prior_preservation=False)
    assert class_images(cfg, bm, "cpu", tmp_path / "cache", model_id=MODEL_ID, generate=c) == []
    assert c.calls == [] and not (tmp_path / "cache").exists()


def test_sdxl_default_renderer(tiny_sdxl, tmp_path):
    from trainer.models import load_base_model

    sdxl = load_base_model(tiny_sdxl)
    samples = class_images(make_cfg(num_class_images=1), sdxl, "cpu", tmp_path, model_id=MODEL_ID)
    with Image.open(samples[0].path) as im:
        assert (im.format, im.size) == ("PNG", (64, 64))
    assert all(not m.training for m in (sdxl.unet, sdxl.vae, *sdxl.text_encoders))
