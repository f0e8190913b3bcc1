"""The quality report flags every planted problem in a messy dataset and nothing in a clean one."""
from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image, ImageFilter

from data_fixtures import bomb_png, caption_dataset, guide_dataset, save, snapshot, textured, truncated_png
from trainer.data import DatasetCheckError, check_dataset
from trainer.errors import DatasetError
from trainer.data import findings as F
from trainer.data.quality import BLUR_THRESHOLD, NEAR_DUPLICATE_BITS


def test_clean_dataset_has_no_findings(tmp_path):
    root = guide_dataset(tmp_path / "clean", n=20)
    (root / "negative_prompts.txt").write_text("blurry, low quality\n", encoding="utf-8")
    before = snapshot(tmp_path)
    ds, report = check_dataset(root, resolution=256, trigger_token="wcfox", placeholder="<my_token>",
                               preset_key="fotostudio")
    assert report.problems == [] and report.warnings == [], report.to_text()
    assert report.ok and len(ds.samples) == 20 and ds.warnings == []
    assert report.stats["images"] == 20 and report.stats["buckets"] == {"256x256": 7, "320x192": 7, "192x320": 6}
    text = report.to_text()
    assert "ready, 0 warning(s)" in text and "20 usable image(s)" in text and "1 negative prompt(s)" in text
    assert snapshot(tmp_path) == before  # checking reads only


def _messy(root):
    """One of each planted problem, beside 4 good pictures with caption files."""
    caption_dataset(root, n=4)
    (root / "0003.txt").write_text("a caption that forgot the placeholder", encoding="utf-8")
    blurred = textured(50).filter(ImageFilter.GaussianBlur(4))
    save(blurred, root / "blurry.png")
    (root / "blurry.txt").write_text("<my_token> blurred", encoding="utf-8")
    shutil.copy(root / "0000.png", root / "copy_of_0000.png")
    (root / "copy_of_0000.txt").write_text("<my_token> copy", encoding="utf-8")
    save(Image.open(root / "0001.png").convert("RGB"), root / "reencoded.jpg", quality=70)
    (root / "reencoded.txt").write_text("<my_token> again", encoding="utf-8")
    save(textured(51, (64, 64)), root / "tiny.png")
    (root / "tiny.txt").write_text("<my_token> tiny", encoding="utf-8")
    save(textured(52, (1200, 300)), root / "panorama.png")
    (root / "panorama.txt").write_text("<my_token> wide", encoding="utf-8")
    for name, data in {"truncated.png": truncated_png(), "empty.png": b"", "notes.png": b"just text",
                       "bomb.png": bomb_png()}.items():
        (root / name).write_bytes(data)
        (root / name.replace(".png", ".txt")).write_text("<my_token>", encoding="utf-8")
    save(textured(53), root / "uncaptioned.png")
    (root / "lonely.txt").write_text("<my_token> without picture", encoding="utf-8")
    save(textured(54), root / "german.png")
    (root / "german.txt").write_bytes("<my_token> Käfer im Gras".encode("cp1252"))
    save(textured(55), root / "empty_caption.png")
    (root / "empty_caption.txt").write_text("   \n", encoding="utf-8")
    save(textured(56), root / "sub" / "Case.png")
    save(textured(57), root / "sub" / "case.png")
    (root / "sub" / "Case.txt").write_text("<my_token> case", encoding="utf-8")
    (root / "metadata.jsonl").write_text(
        '{"file": "missing.png", "prompt": "<my_token>"}\n{not json\n', encoding="utf-8")
    return root


EXPECTED = {  # code -> files it must name ("" = the dataset)
    F.BLURRY: {"blurry.png"},
    F.EXACT_DUPLICATE: {"copy_of_0000.png"},
    F.NEAR_DUPLICATE: {"reencoded.jpg"},
    F.LOW_RESOLUTION: {"tiny.png"},
    F.EXTREME_ASPECT: {"panorama.png"},
    F.UNREADABLE_IMAGE: {"truncated.png", "empty.png", "notes.png", "bomb.png"},
    F.MISSING_CAPTION: {"uncaptioned.png"},
    F.ORPHAN_CAPTION: {"lonely.txt"},
    F.MISSING_IMAGE: {"metadata.jsonl"},
    F.BAD_METADATA_LINE: {"metadata.jsonl"},
    F.CAPTION_ENCODING: {"german.txt"},
    F.EMPTY_CAPTION: {"empty_caption.png"},
    F.DUPLICATE_NAME: {"sub/case.png"},
    F.NO_TRIGGER: {"0003.png", "empty_caption.png"},
    F.TOO_FEW_IMAGES: {""},
}


def test_messy_dataset_flags_each_planted_problem(tmp_path):
    root = _messy(tmp_path / "messy")
    before = snapshot(tmp_path)
    ds, report = check_dataset(root, resolution=256, trigger_token="wcfox", preset_key="fotostudio")
    assert report.problems == []
    for code, files in EXPECTED.items():
        assert set(report.files(code)) == files, (code, report.files(code))
    assert report.codes() == set(EXPECTED), report.codes() ^ set(EXPECTED)
    # the unreadable pictures left the dataset; the readable ones with captions stayed
    names = {s.path.name for s in ds.samples}
    assert not names & {"truncated.png", "empty.png", "notes.png", "bomb.png", "uncaptioned.png"}
    assert {"0000.png", "blurry.png", "german.png", "Case.png"} <= names
    by = {s.path.name: s for s in ds.samples}
    assert by["german.png"].caption == "wcfox Käfer im Gras"
    assert snapshot(tmp_path) == before


def test_messages_name_the_problem_and_the_fix(tmp_path):
    root = _messy(tmp_path / "messy")
    _, report = check_dataset(root, resolution=256, trigger_token="wcfox")
    for f in report.warnings:
        assert "Fix:" in f.message, f
    msg = {f.code: f.message for f in report.warnings}
    assert f"below {BLUR_THRESHOLD:.0f}" in msg[F.BLURRY]
    assert f"threshold {NEAR_DUPLICATE_BITS}" in msg[F.NEAR_DUPLICATE]
    assert "byte-identical to '0000.png'" in msg[F.EXACT_DUPLICATE]
    assert "64×64 px, smaller than its training size 256×256" in msg[F.LOW_RESOLUTION]
    bomb = next(f for f in report.warnings if f.file == "bomb.png")
    assert "too large to be safe" in bomb.message
    text = report.to_text()
    assert text.startswith(f"Dataset {root}: ready,") and "[UNREADABLE_IMAGE]" in text and "Warnings:" in text


def test_preset_range_and_guide_floor(tmp_path):
    root = guide_dataset(tmp_path / "ds", n=12)
    _, rep = check_dataset(root, resolution=256, trigger_token="t", preset_key="fotostudio")
    assert rep.files(F.TOO_FEW_IMAGES) == [""] and "at least 20–30" in rep.warnings[0].message
    _, rep = check_dataset(root, resolution=256, trigger_token="t", preset_key="galerie")
    assert "'Galerie – Feinabstimmung' is meant for (75–150)" in rep.warnings[0].message
    assert "choose 'Fotostudio – Schnellstart'" in rep.warnings[0].message
    root = guide_dataset(tmp_path / "big", n=32)
    _, rep = check_dataset(root, resolution=256, trigger_token="t", preset_key="fotostudio")
    assert rep.files(F.TOO_MANY_IMAGES) == [""] and "Atelier" in rep.warnings[0].message


def test_trigger_token_missing_everywhere_and_placeholder_without_trigger(tmp_path):
    root = tmp_path / "ds"
    guide_dataset(root, n=20)
    meta = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    (root / "metadata.jsonl").write_text("\n".join(json.dumps({"file": m["file"], "prompt": "a photo"}) for m in meta))
    _, rep = check_dataset(root, resolution=256, trigger_token="wcfox")
    assert [f.file for f in rep.warnings] == [""] and "appears in no prompt" in rep.warnings[0].message
    guide_dataset(root, n=20)
    _, rep = check_dataset(root, resolution=256, trigger_token="")
    assert rep.files(F.PLACEHOLDER_UNSET) == [""]


def test_no_usable_images_blocks_with_the_report(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "a.png").write_bytes(truncated_png())
    (root / "a.txt").write_text("<my_token>")
    with pytest.raises(DatasetCheckError) as e:
        check_dataset(root, resolution=256, trigger_token="t")
    assert isinstance(e.value, DatasetError)
    assert e.value.report.files(F.NO_IMAGES) == [""] and e.value.report.files(F.UNREADABLE_IMAGE) == ["a.png"]
    assert "BLOCKED" in str(e.value) and "No training images found" in str(e.value)


def test_square_mode_judges_against_the_square_crop(tmp_path):
    root = guide_dataset(tmp_path / "ds", n=20)
    _, rep = check_dataset(root, resolution=256, trigger_token="t", bucketed=False)
    assert rep.stats["buckets"] == {"256x256": 20}
    assert rep.files(F.EXTREME_ASPECT) == []  # 3:2 is within the square-crop limit
    _, rep = check_dataset(root, resolution=320, trigger_token="t", bucketed=False)
    assert len(rep.files(F.LOW_RESOLUTION)) == 13  # landscape/portrait 384x256 are 256 short: ×1.25


def test_many_findings_of_one_kind_share_one_fix_line(tmp_path):
    root = tmp_path / "ds"
    for i in range(12):
        save(textured(i, (64, 64)), root / f"{i}.png")
        (root / f"{i}.txt").write_text("<my_token>")
    _, rep = check_dataset(root, resolution=256, trigger_token="t")
    text = rep.to_text()
    assert "- [LOW_RESOLUTION] 12 files. Fix: use a larger original or a lower resolution." in text
    assert "… and 4 more" in text
