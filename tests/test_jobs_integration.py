"""Whole jobs over the dataset formats, buckets, the latent cache, prior preservation and logging."""
from __future__ import annotations

import json
import zipfile

import pytest
from conftest import tiny_overrides, tree
from data_fixtures import caption_dataset, guide_dataset, save, textured

from trainer import ConfigError, TrainConfig
from trainer.data import import_zip
from trainer.job import run_job


def _run(tmp_path, base, data, **kw):
    kw.setdefault("preview_every", -1)
    kw.setdefault("max_train_steps", 2)
    return run_job(TrainConfig.from_dict(tiny_overrides(tmp_path, base, data, **kw)))


def _imagefolder(root):
    (root).mkdir(parents=True)
    lines = []
    for i in range(3):
        save(textured(i), root / f"{i}.png")
        lines.append(json.dumps({"file_name": f"{i}.png", "text": f"a <my_token> picture {i}"}))
    (root / "metadata.jsonl").write_text("\n".join(lines))
    return root


def _kohya(root):
    for i in range(2):
        save(textured(i), root / "5_wcfox" / f"{i}.png")
        (root / "5_wcfox" / f"{i}.txt").write_text("wcfox, fox, red")
    save(textured(9), root / "1_other" / "nested" / "x.png")
    (root / "1_other" / "nested" / "x.txt").write_text("wcfox, other")
    return root


@pytest.mark.parametrize("layout", ["guide", "imagefolder", "captions", "kohya", "zip"])
def test_every_format_trains(layout, tmp_path, tiny_sd15):
    data = tmp_path / "data"
    if layout == "guide":
        guide_dataset(data, n=3)
    elif layout == "imagefolder":
        _imagefolder(data)
    elif layout == "captions":
        caption_dataset(data, n=3)
    elif layout == "kohya":
        _kohya(data)
    else:
        src = guide_dataset(tmp_path / "src", n=3)
        with zipfile.ZipFile(tmp_path / "set.zip", "w") as z:
            for p in src.rglob("*"):
                if p.is_file():
                    z.write(p, p.relative_to(src).as_posix())
        data = import_zip(tmp_path / "set.zip", tmp_path / "input")
    res = _run(tmp_path, tiny_sd15, data)
    assert res.lora_path.is_file() and res.record["status"] == "finished"
    if layout == "kohya":
        assert res.record["dataset"]["images"] == 3  # repeats multiply steps, not files


def test_buckets_keep_aspect_ratios_and_second_run_skips_the_vae(tmp_path, tiny_sd15, monkeypatch):
    from diffusers import AutoencoderKL

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    sizes = [(320, 192), (192, 320), (256, 256)]
    lines = []
    for i, wh in enumerate(sizes):
        save(textured(i, wh), data / "images" / f"{i}.png")
        lines.append(json.dumps({"file": f"{i}.png", "prompt": f"wcfox {i}"}))
    (data / "metadata.jsonl").write_text("\n".join(lines))
    calls = {"n": 0}
    real = AutoencoderKL.encode

    def counting(self, x, *a, **k):
        calls["n"] += x.shape[0]
        return real(self, x, *a, **k)

    monkeypatch.setattr(AutoencoderKL, "encode", counting)
    first = _run(tmp_path, tiny_sd15, data, resolution=256)
    assert calls["n"] == 3
    aspects = sorted(int(b.split("x")[0]) / int(b.split("x")[1]) for b in first.record["dataset"]["buckets"])
    # landscape, square, portrait: none squashed into a square crop, each within a bucket step of the picture
    assert len(aspects) == 3 and aspects[0] < 1 == aspects[1] < aspects[2]
    assert aspects[2] == pytest.approx(320 / 192, abs=0.2) and aspects[0] == pytest.approx(192 / 320, abs=0.1)
    calls["n"] = 0
    second = _run(tmp_path, tiny_sd15, data, resolution=256)
    assert calls["n"] == 0, "the second run encoded images again"
    assert second.record["latent_cache"]["hits"] == 3
    (data / "images" / "0.png").unlink()
    save(textured(42, (320, 192)), data / "images" / "0.png")  # changed content: encoded again
    _run(tmp_path, tiny_sd15, data, resolution=256)
    assert calls["n"] == 1


def test_first_step_waits_only_for_its_own_batch(tmp_path, tiny_sd15, sample_dataset, monkeypatch):
    """On the CPU the VAE encodes a picture when a batch first needs it (issue #12): by the end of step 1 only
    that batch's pictures were encoded; the rest follow as training (and the held-out loss) reaches them."""
    from diffusers import AutoencoderKL

    from trainer.loop import Callbacks

    encoded, at_step = {"n": 0}, {}
    real = AutoencoderKL.encode

    def counting(self, x, *a, **k):
        encoded["n"] += x.shape[0]
        return real(self, x, *a, **k)

    monkeypatch.setattr(AutoencoderKL, "encode", counting)
    cfg = TrainConfig.from_dict(tiny_overrides(tmp_path, tiny_sd15, sample_dataset, max_train_steps=2,
                                               train_batch_size=1, preview_every=-1))
    res = run_job(cfg, Callbacks(on_step=lambda info: at_step.setdefault(info.step, encoded["n"])))
    assert at_step[1] == 1 and at_step[2] == 2
    assert encoded["n"] == 4  # the held-out loss after training needed the other two; each picture once
    assert res.record["latent_cache"] == {"hits": 0, "misses": 4, "write_errors": 0}


def test_prior_preservation_generates_once_and_records_both_terms(tmp_path, tiny_sd15, sample_dataset, monkeypatch):
    from trainer import prior

    renders = {"n": 0}
    real = prior.PipelineRenderer.__call__

    def counting(self, *a, **k):
        renders["n"] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(prior.PipelineRenderer, "__call__", counting)
    kw = dict(with_prior_preservation=True, class_prompt="a painting of a fox", num_class_images=3,
              class_sampling_steps=2, max_train_steps=3)
    res = _run(tmp_path, tiny_sd15, sample_dataset, **kw)
    assert renders["n"] == 3
    terms = res.record["metrics"]["loss_terms"]
    assert len(terms["instance_loss"]) == len(terms["prior_loss"]) == 3
    for total, inst, pri in zip(res.record["metrics"]["losses"], terms["instance_loss"], terms["prior_loss"]):
        assert total == pytest.approx(inst + 1.0 * pri, rel=1e-5)
    assert res.record["prior"]["class_images"] == 3
    _run(tmp_path, tiny_sd15, sample_dataset, **kw)
    assert renders["n"] == 3, "the second run rendered class images again"

    own = tmp_path / "own_class"
    for i in range(2):
        save(textured(i), own / f"{i}.png")
    res = _run(tmp_path, tiny_sd15, sample_dataset, **dict(kw, class_data_dir=str(own)))
    assert renders["n"] == 3 and res.record["prior"]["class_images"] == 2


def test_wandb_missing_is_a_clear_message_and_nothing_runs(tmp_path, tiny_sd15, sample_dataset):
    pytest.importorskip("tensorboard")
    try:
        import wandb  # noqa: F401

        pytest.skip("wandb is installed here")
    except ImportError:
        pass
    before = tree(tmp_path)
    with pytest.raises(ConfigError, match="pip install wandb"):
        _run(tmp_path, tiny_sd15, sample_dataset, report_to=["tensorboard", "wandb"])
    assert tree(tmp_path) == before


def test_caption_dropout_and_tag_shuffle_train_and_resume_the_same(tmp_path, tiny_sd15):
    data = caption_dataset(tmp_path / "data", n=3)
    res = _run(tmp_path, tiny_sd15, data, caption_dropout=0.5, shuffle_tags=True, keep_tags=1, max_train_steps=3)
    assert res.record["status"] == "finished"
