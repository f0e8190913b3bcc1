"""Every dataset layout and picture format the guide's users bring is found and decoded correctly."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from PIL import Image

from data_fixtures import caption_dataset, folder_entries, guide_dataset, png_bytes, save, textured, zip_of
from trainer.data import Dataset, Sample, check_dataset, image_size, import_zip, load_dataset, load_rgb
from trainer.data.images import to_training_tensor


def _by_name(ds: Dataset) -> dict[str, Sample]:
    return {s.path.name: s for s in ds.samples}


# ------------------------------------------------------------------ layouts
def test_guide_layout(tmp_path):
    root = guide_dataset(tmp_path / "ds", n=3)
    ds = load_dataset(root, trigger_token="wcfox")
    assert [s.path.name for s in ds.samples] == ["0000.png", "0001.png", "0002.png"]
    assert ds.samples[0].caption == "photo 0 of wcfox, detailed"
    assert all(s.repeats == 1 for s in ds.samples) and ds.warnings == []


def test_imagefolder_convention_in_a_nested_split(tmp_path):
    root = tmp_path / "ds"
    guide_dataset(root / "train", n=2, key="file_name", prompt_key="text")
    # imagefolder puts the pictures beside metadata.jsonl: move them up
    for p in (root / "train" / "images").iterdir():
        p.rename(root / "train" / p.name)
    (root / "train" / "images").rmdir()
    ds = load_dataset(root, trigger_token="tok")
    assert sorted(_by_name(ds)) == ["0000.png", "0001.png"]
    assert _by_name(ds)["0001.png"].caption == "photo 1 of tok, detailed"


@pytest.mark.parametrize("ext", [".txt", ".caption"])
def test_caption_files_beside_images(tmp_path, ext):
    root = caption_dataset(tmp_path / "ds", n=3, ext=ext)
    ds = load_dataset(root, trigger_token="tok")
    assert len(ds.samples) == 3 and _by_name(ds)["0002.png"].caption == "tok, picture 2, outdoors"


def test_kohya_repeat_folders_take_captions_from_files_not_folder_names(tmp_path):
    root = tmp_path / "ds"
    caption_dataset(root / "img" / "10_wcfox", n=2)
    caption_dataset(root / "img" / "3_landscape", n=1, start=5)
    save(textured(9), root / "img" / "10_wcfox" / "nocaption.png")  # the concept is NOT a caption
    ds = load_dataset(root, trigger_token="tok")
    by = _by_name(ds)
    assert by["0000.png"].repeats == 10 and by["0000.png"].concept == "wcfox"
    assert by["0005.png"].repeats == 3 and "landscape" not in by["0005.png"].caption
    assert "nocaption.png" not in by
    assert any("nocaption.png" in w and "no caption file" in w for w in ds.warnings)


def test_nested_folders_and_mixed_metadata_and_caption_files(tmp_path):
    root = guide_dataset(tmp_path / "ds", n=2)
    caption_dataset(root / "extra" / "deeper", n=2, start=10)
    ds = load_dataset(root, trigger_token="tok")
    assert sorted(_by_name(ds)) == ["0000.png", "0001.png", "0010.png", "0011.png"]


def test_negative_prompts_file_is_read_for_previews(tmp_path):
    root = guide_dataset(tmp_path / "ds", n=2)
    (root / "negative_prompts.txt").write_text("# the guide's Prompt-Negativliste\nblurry, low quality\n\nwatermark\n",
                                               encoding="utf-8")
    ds = load_dataset(root)
    assert ds.negative_prompts == ["blurry, low quality", "watermark"]
    assert ds.negative_prompt == "blurry, low quality, watermark"
    assert not any("negative_prompts" in w for w in ds.warnings)  # not an orphan caption


@pytest.mark.parametrize("layout", ["guide", "captions", "kohya"])
def test_zip_of_each_layout_imports_and_loads(tmp_path, layout):
    src = tmp_path / "src"
    if layout == "guide":
        guide_dataset(src, n=2)
    elif layout == "captions":
        caption_dataset(src, n=2)
    else:
        caption_dataset(src / "5_fox", n=2)
    z = zip_of(folder_entries(src, prefix="my_concept/"), tmp_path / "upload.zip")  # zipped with its folder
    target = import_zip(z, tmp_path / "input")
    assert target == tmp_path / "input" / "upload"
    ds = load_dataset(target)
    assert len(ds.samples) == 2
    assert all(s.repeats == (5 if layout == "kohya" else 1) for s in ds.samples)
    assert not (target / "my_concept").exists()  # the single top folder was unwrapped
    assert [p.name for p in (tmp_path / "input").iterdir()] == ["upload"]  # no temp folder left


def test_zip_of_a_single_repeat_folder_keeps_it(tmp_path):
    src = caption_dataset(tmp_path / "src" / "10_fox", n=2)
    z = zip_of(folder_entries(src.parent), tmp_path / "fox.zip")  # the zip's only top folder is 10_fox/
    ds = load_dataset(import_zip(z, tmp_path / "input"))
    assert [s.repeats for s in ds.samples] == [10, 10]


def test_metadata_may_name_files_linux_allows(tmp_path):
    root = tmp_path / "ds"
    save(textured(1), root / "photo: 1.png")
    (root / "metadata.jsonl").write_text(json.dumps({"file": "photo: 1.png", "prompt": "<my_token>"}))
    assert len(load_dataset(root).samples) == 1


def test_load_dataset_keeps_its_signature_and_content_hash(tmp_path):
    root = guide_dataset(tmp_path / "ds", n=2)
    a = load_dataset(str(root), "tok", "<my_token>")
    b = load_dataset(root, trigger_token="tok", placeholder="<my_token>")
    before = a.content_hash()
    assert before == b.content_hash()
    (root / "images" / "0000.png").write_bytes(png_bytes(2, 2, 8, 0, b"\x00\x00\x00\x00\x00\x00"))
    assert load_dataset(root, "tok").content_hash() != before


# ------------------------------------------------------------------ picture formats
@pytest.mark.parametrize("fmt,ext,kw", [("PNG", ".png", {}), ("JPEG", ".jpg", {"quality": 95}),
                                        ("WEBP", ".webp", {"lossless": True}), ("BMP", ".bmp", {})])
def test_formats_decode_to_rgb(tmp_path, fmt, ext, kw):
    img = textured(1, (64, 48))
    p = save(img, tmp_path / f"x{ext}", format=fmt, **kw)
    out = load_rgb(p)
    assert out.mode == "RGB" and out.size == (64, 48)
    err = np.abs(np.asarray(out, np.int16) - np.asarray(img, np.int16)).mean()
    assert err < (10 if fmt == "JPEG" else 0.01)  # JPEG: grain and chroma subsampling cost a little


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (60, 30), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 30, 30))  # blue left half
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    p = save(img, tmp_path / "phone.jpg", exif=exif, quality=95)
    out = load_rgb(p)
    assert out.size == (30, 60) and image_size(p) == (30, 60)
    r, g, b = out.getpixel((15, 5))  # the blue (left) half ends up on top
    assert b > 200 and r < 60


def test_alpha_and_palette_are_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert load_rgb(save(rgba, tmp_path / "a.png")).getpixel((0, 0)) == (255, 255, 255)
    la = Image.new("LA", (8, 8), (0, 0))
    assert load_rgb(save(la, tmp_path / "la.png")).getpixel((0, 0)) == (255, 255, 255)
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    save(pal, tmp_path / "p.png", transparency=1)
    assert load_rgb(tmp_path / "p.png").getpixel((0, 0)) == (255, 255, 255)
    save(Image.new("1", (8, 8), 1), tmp_path / "bw.png")
    assert load_rgb(tmp_path / "bw.png").getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_jpeg_comes_out_in_the_right_colours(tmp_path):
    orange = Image.new("RGB", (16, 16), (200, 100, 50))
    p = save(orange.convert("CMYK"), tmp_path / "print.jpg", quality=95)
    assert Image.open(p).mode == "CMYK"
    assert np.allclose(load_rgb(p).getpixel((8, 8)), (200, 100, 50), atol=6)
    grey = save(Image.new("CMYK", (16, 16), (0, 0, 0, 128)), tmp_path / "k.jpg", quality=95)  # black ink only
    assert np.allclose(load_rgb(grey).getpixel((8, 8)), (127, 127, 127), atol=6)
    broken = save(orange.convert("CMYK"), tmp_path / "icc.jpg", quality=95, icc_profile=b"not a profile")
    assert np.allclose(load_rgb(broken).getpixel((8, 8)), (200, 100, 50), atol=6)


def test_16_bit_pngs_scale_instead_of_clipping(tmp_path):
    w, h = 4, 2
    rgb16 = b"".join(b"\x00" + struct.pack(">HHH", 0xC000, 0x4000, 0x1234) * w for _ in range(h))
    (tmp_path / "rgb16.png").write_bytes(png_bytes(w, h, 16, 2, rgb16))
    assert load_rgb(tmp_path / "rgb16.png").getpixel((0, 0)) == (192, 64, 18)
    dark = Image.fromarray(np.full((4, 4), 255, np.uint16))  # 255 of 65535: nearly black, not white
    out = load_rgb(save(dark, tmp_path / "dark16.png"))
    assert out.getpixel((0, 0)) == (1, 1, 1)
    bright = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    assert load_rgb(save(bright, tmp_path / "bright16.png")).getpixel((0, 0)) == (255, 255, 255)


def test_training_tensor_covers_any_bucket(tmp_path):
    img = textured(3, (400, 300))
    t, (top, left) = to_training_tensor(img, 320, 192)
    assert t.shape == (3, 192, 320) and float(t.min()) >= -1 and float(t.max()) <= 1


def test_check_dataset_records_sizes_as_shown(tmp_path):
    root = guide_dataset(tmp_path / "ds", n=3)
    ds, _ = check_dataset(root, resolution=256, trigger_token="tok")
    assert [s.size for s in ds.samples] == [(320, 320), (384, 256), (256, 384)]
    assert ds.image_sizes() == [(320, 320), (384, 256), (256, 384)]
    json.dumps(_.to_dict())  # the job record can hold the report


def test_large_jpeg_is_checked_at_reduced_decode_with_its_full_size(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 8
    root = tmp_path / "ds"
    save(textured(4, (2400, 1600)), root / "big.jpg", quality=90, exif=exif)
    (root / "big.txt").write_text("<my_token>")
    ds, rep = check_dataset(root, resolution=512, trigger_token="tok")
    assert ds.samples[0].size == (1600, 2400) and rep.stats["portrait"] == 1
