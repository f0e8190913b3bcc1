"""Bad input gets a clear error or a reported skip — never a crash, never a file outside its place.

Every case asserts the message a person would read and that the directory tree around the dataset
(including a folder 'outside' it with a secret) is exactly as before, or, for a ZIP import that
succeeds, changed only inside the new target folder.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import pytest

from bad_input_checks import IS_ROOT, area, raises, reported  # noqa: F401 - area is a fixture
from data_fixtures import (bomb_png, caption_dataset, folder_entries, guide_dataset, save, snapshot, textured,
                           truncated_png, zip_of)
from trainer.data import (ALLOWED_ROOTS_ENV, DatasetCheckError, ZipLimits, check_dataset, confine, import_zip,
                          load_dataset, load_rgb)
from trainer.data import findings as F
from trainer.data import zipimport
from trainer.errors import DatasetError

def meta_dataset(area, name):
    root = guide_dataset(area / "input" / "ds", n=2)
    with open(root / "metadata.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"file": name, "prompt": "<my_token>"}) + "\n")
    return root


# ------------------------------------------------------------------ paths inside a dataset (7)
@pytest.mark.parametrize("name,fragment", [
    ("../../outside/secret.png", "climbs out of the dataset folder"),
    ("{abs}", "is an absolute path"),
    ("C:\\Users\\me\\secret.png", "is an absolute path"),
    ("..\\..\\outside\\secret.png", "climbs out of the dataset folder"),
])
def test_metadata_path_outside_the_dataset_is_skipped(area, name, fragment):
    """One unsafe line skips its item (issue #11, class 13): the two good pictures still train."""
    name = name.replace("{abs}", str(area / "outside" / "secret.png"))
    root = meta_dataset(area, name)
    rep = reported(area, root, F.UNSAFE_PATH, "metadata.jsonl", fragment, "line 3 skipped")
    assert rep.ok and rep.stats["images"] == 2 and "ready" in rep.to_text()
    assert [s.path.name for s in load_dataset(root).samples] == ["0000.png", "0001.png"]


def test_symlinked_image_leading_outside_is_skipped(area):
    root = caption_dataset(area / "input" / "ds", n=2)
    (root / "stolen.png").symlink_to(area / "outside" / "secret.png")
    (root / "stolen.txt").write_text("<my_token>")
    rep = reported(area, root, F.UNSAFE_PATH, "stolen.png", "is a symlink to", "outside the dataset folder",
                   "skipped", "Fix: copy the file")
    assert rep.ok and rep.stats["images"] == 2


def test_symlinked_folder_leading_outside_is_skipped(area):
    root = caption_dataset(area / "input" / "ds", n=2)
    (root / "more").symlink_to(area / "outside", target_is_directory=True)
    rep = reported(area, root, F.UNSAFE_PATH, "more", "is a symlink to", str(area / "outside"))
    assert rep.ok and rep.stats["images"] == 2


def test_metadata_naming_a_symlink_that_leads_outside_is_skipped(area):
    root = meta_dataset(area, "link.png")
    (root / "images" / "link.png").symlink_to(area / "outside" / "secret.png")
    rep = reported(area, root, F.UNSAFE_PATH, "images/link.png", "resolves outside the dataset folder; skipped")
    assert rep.ok and rep.stats["images"] == 2


# ------------------------------------------------------------------ allowed roots (4)
def test_dataset_outside_the_allowed_roots_is_refused(area):
    raises(area, lambda: check_dataset(area / "outside", resolution=256, allowed_roots=[area / "input"]),
           "is outside the allowed folders", str(area / "input"), ALLOWED_ROOTS_ENV)


def test_symlink_inside_an_allowed_root_pointing_outside_is_refused(area):
    (area / "input" / "sneaky").symlink_to(area / "outside", target_is_directory=True)
    before = snapshot(area)
    with pytest.raises(DatasetError, match="is outside the allowed folders"):
        confine("sneaky", [area / "input"])
    with pytest.raises(DatasetError, match="is outside the allowed folders"):
        check_dataset(area / "input" / "sneaky", resolution=256, allowed_roots=[area / "input"])
    assert snapshot(area) == before


def test_relative_path_climbing_out_of_the_root_is_refused(area):
    raises(area, lambda: confine("../outside", [area / "input"]), "is outside the allowed folders")
    raises(area, lambda: confine("", [area / "input"]), "No dataset folder given")


def test_operator_can_allow_more_roots(area, monkeypatch):
    caption_dataset(area / "outside" / "ds", n=1)
    monkeypatch.setenv(ALLOWED_ROOTS_ENV, os.pathsep.join(["/nonexistent", str(area / "outside")]))
    assert confine(area / "outside" / "ds", [area / "input"]) == (area / "outside" / "ds").resolve()
    ds, _ = check_dataset(area / "outside" / "ds", resolution=256, allowed_roots=[area / "input"])
    assert len(ds.samples) == 1
    assert confine("ds", [area / "outside"]) == (area / "outside" / "ds").resolve()  # relative: in the first root


# ------------------------------------------------------------------ ZIP import (18)
def _good_entries(area) -> dict[str, bytes]:
    return folder_entries(caption_dataset(area / "src", n=2))


def zip_fails(area, entries, *fragments, symlinks=None, limits=None, name=None, compression=zipfile.ZIP_DEFLATED):
    z = zip_of(entries, area / "upload.zip", symlinks=symlinks, compression=compression)
    e = raises(area, lambda: import_zip(z, area / "input", name=name, limits=limits), *fragments)
    assert list((area / "input").iterdir()) == []  # no target, no temp folder
    return e


@pytest.mark.parametrize("bad", ["../evil.png", "/tmp/evil.png", "..\\evil.png", "C:/evil.png",
                                 "images/a:evil.png", "images/../../evil.png"])
def test_zip_entry_leaving_the_target_is_refused(area, bad):
    entries = _good_entries(area) | {bad: b"x"}
    e = zip_fails(area, entries, "Nothing was extracted", f"'{bad}'")
    assert any(k in str(e) for k in ("climbs out", "absolute path", "not allowed in file names"))
    assert not (area / "evil.png").exists() and not Path("/tmp/evil.png").exists()


def test_zip_symlink_entry_is_refused(area):
    zip_fails(area, _good_entries(area), "is a symbolic link", "Nothing was extracted",
              symlinks={"images/passwd.png": "/etc/passwd"})


def test_zip_bomb_by_compression_ratio_is_refused(area):
    entries = _good_entries(area) | {"images/bomb.png": b"\x00" * (4 << 20)}  # 4 MiB of zeros → ~4 KiB
    zip_fails(area, entries, "the mark of a ZIP bomb", "Nothing was extracted")


def test_zip_total_size_limit(area, monkeypatch):
    entries = _good_entries(area)
    zip_fails(area, entries, "more than the limit of 1000 bytes", limits=ZipLimits(max_total_bytes=1000))
    monkeypatch.setattr(zipimport, "MAX_ZIP_TOTAL_BYTES", 1000)  # the module constants are the defaults
    zip_fails(area, entries, "for one dataset")


def test_zip_entry_count_limit(area):
    entries = _good_entries(area) | {f"images/{i}.txt": b"x" for i in range(10)}
    zip_fails(area, entries, "holds 14 entries, more than the limit of 5", limits=ZipLimits(max_entries=5))


def test_zip_single_entry_size_limit(area):
    zip_fails(area, _good_entries(area), "more than the limit of 100 bytes per file",
              limits=ZipLimits(max_entry_bytes=100))


def test_damaged_zip_leaves_nothing_behind(area):
    entries = _good_entries(area)
    z = zip_of(entries, area / "upload.zip", compression=zipfile.ZIP_STORED)
    data = bytearray(z.read_bytes())
    payload = next(iter(entries.values()))
    i = data.find(payload[100:140])
    data[i] ^= 0xFF  # one flipped bit in the first picture: CRC error while extracting
    z.write_bytes(bytes(data))
    raises(area, lambda: import_zip(z, area / "input"), "is not a readable ZIP file", "Nothing was extracted")
    assert list((area / "input").iterdir()) == []


def test_not_a_zip(area):
    (area / "upload.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    raises(area, lambda: import_zip(area / "upload.zip", area / "input"), "is not a readable ZIP file")
    raises(area, lambda: import_zip(area / "missing.zip", area / "input"), "not found")


def test_encrypted_entry_is_refused(area):
    z = zip_of(_good_entries(area), area / "upload.zip")
    data = bytearray(z.read_bytes())
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local and central headers
        i = data.find(sig)
        while i >= 0:
            data[i + flag_at] |= 0x1  # the bit a password-protected entry carries
            i = data.find(sig, i + 4)
    z.write_bytes(bytes(data))
    raises(area, lambda: import_zip(z, area / "input"), "is encrypted", "without a password")


def test_zip_names_colliding_without_case_are_refused(area):
    entries = _good_entries(area)
    entries |= {"0000.PNG": entries["0000.png"]}
    zip_fails(area, entries, "differ only in upper/lower case", "'0000.png'", "'0000.PNG'")


def test_zip_file_that_is_also_a_folder_is_refused(area):
    entries = _good_entries(area) | {"extra.png": b"x", "extra.png/0009.png": b"y"}
    zip_fails(area, entries, "is a file and also the folder of")


def test_zip_never_writes_into_an_existing_folder(area):
    (area / "input" / "upload").mkdir()
    (area / "input" / "upload" / "mine.txt").write_text("keep me")
    z = zip_of(_good_entries(area), area / "upload.zip")
    raises(area, lambda: import_zip(z, area / "input"), "already exists", "never writes into an existing folder")
    assert (area / "input" / "upload" / "mine.txt").read_text() == "keep me"


def test_zip_target_name_with_a_path_is_refused(area):
    z = zip_of(_good_entries(area), area / "upload.zip")
    raises(area, lambda: import_zip(z, area / "input", name="../outside/x"), "is not a plain folder name")


def test_zip_without_pictures_is_refused(area):
    zip_fails(area, {"readme.txt": b"hi", "metadata.jsonl": b"{}"}, "holds no pictures")


def test_zip_success_writes_only_its_new_folder(area):
    entries = _good_entries(area) | {"__MACOSX/._0000.png": b"\x00\x05\x16\x07", "run.sh": b"rm -rf /",
                                     ".hidden.png": b"x"}
    z = zip_of(entries, area / "upload.zip")
    before = snapshot(area)
    target = import_zip(z, area / "input", name="Mein Datensatz")
    after = snapshot(area)
    changed = {k for k in set(before) ^ set(after)} | {k for k in before if k in after and before[k] != after[k]}
    assert changed and all(k.startswith("input/Mein Datensatz/") or k == "input/Mein Datensatz" for k in changed)
    assert sorted(p.name for p in target.iterdir()) == ["0000.png", "0000.txt", "0001.png", "0001.txt"]


# ------------------------------------------------------------------ pictures (5)
@pytest.mark.parametrize("w,h,shown", [(40_000, 40_000, "1600 megapixels, above the 256 megapixels"),  # Pillow's
                                        (20_000, 15_000, "20000×15000 px = 300 megapixels, above the 50 megapixels")])
def test_decompression_bomb_image(area, w, h, shown):
    root = caption_dataset(area / "input" / "ds", n=2)
    (root / "bomb.png").write_bytes(bomb_png(w, h))
    (root / "bomb.txt").write_text("<my_token>")
    raises(area, lambda: load_rgb(root / "bomb.png"), "bomb.png: image is too large to be safe", "Fix: downscale")
    limit = shown.rsplit("the ", 1)[1]
    reported(area, root, F.UNREADABLE_IMAGE, "bomb.png", "skipped: image is too large to be safe", shown,
             f"Fix: downscale it below {limit}")


@pytest.mark.parametrize("name,data,fragment", [
    ("truncated.png", truncated_png(), "not a readable image"),
    ("empty.png", b"", "not an image (empty, or another file type"),
    ("notes.jpg", b"these are my notes, not a picture", "not an image (empty, or another file type"),
])
def test_unreadable_pictures_are_skipped_with_a_reason(area, name, data, fragment):
    root = caption_dataset(area / "input" / "ds", n=2)
    (root / name).write_bytes(data)
    (root / (name.rsplit(".", 1)[0] + ".txt")).write_text("<my_token>")
    raises(area, lambda: load_rgb(root / name), f"{name}: {fragment}", "Fix: re-export it as PNG or JPEG")
    rep = reported(area, root, F.UNREADABLE_IMAGE, name, fragment, "Fix:")
    assert rep.stats["images"] == 2 and rep.stats["skipped"] == 1


def test_truncated_jpeg(area):
    root = caption_dataset(area / "input" / "ds", n=2)
    buf = io.BytesIO()
    textured(5, (200, 200)).save(buf, "JPEG")
    (root / "cut.jpg").write_bytes(buf.getvalue()[:1500])
    (root / "cut.txt").write_text("<my_token>")
    reported(area, root, F.UNREADABLE_IMAGE, "cut.jpg", "it may be truncated")


# ------------------------------------------------------------------ metadata and captions (10)
@pytest.mark.parametrize("line,fragment", [
    ('{"file": "0000.png", "prompt": ', "is not valid JSON"),
    ('["0000.png", "a prompt"]', 'it needs "file" and "prompt"'),
    ('{"file": "0000.png"}', 'it needs "file" and "prompt"'),
    ("[" * 100_000, "nested too deeply"),
])
def test_invalid_metadata_lines_are_skipped_and_the_rest_loads(area, line, fragment):
    root = guide_dataset(area / "input" / "ds", n=2)
    with open(root / "metadata.jsonl", "a") as f:
        f.write(line + "\n")
    reported(area, root, F.BAD_METADATA_LINE, "metadata.jsonl", "line 3", fragment)
    assert len(load_dataset(root).samples) == 2


def test_non_utf8_caption_is_read_as_windows_text_and_reported(area):
    root = caption_dataset(area / "input" / "ds", n=2)
    (root / "0001.txt").write_bytes("<my_token> Käfer über Straße".encode("cp1252"))
    reported(area, root, F.CAPTION_ENCODING, "0001.txt", "not UTF-8; read as cp1252", "save captions as UTF-8")
    assert load_dataset(root, "tok").samples[1].caption == "tok Käfer über Straße"


def test_non_utf8_metadata_line(area):
    root = guide_dataset(area / "input" / "ds", n=2)
    text = (root / "metadata.jsonl").read_text().replace("detailed", "Käfer")
    (root / "metadata.jsonl").write_bytes(text.encode("cp1252"))
    reported(area, root, F.CAPTION_ENCODING, "metadata.jsonl", "line 1 is not UTF-8")
    assert load_dataset(root).samples[0].caption.endswith("Käfer")


def test_names_differing_only_in_case(area):
    root = caption_dataset(area / "input" / "ds", n=2)
    save(textured(30), root / "0000.PNG")
    reported(area, root, F.DUPLICATE_NAME, "0000.png", "differs from '0000.PNG' only in upper/lower case",
             "Fix: rename")


def test_metadata_naming_one_image_twice(area):
    root = meta_dataset(area, "0000.png")
    reported(area, root, F.DUPLICATE_NAME, "metadata.jsonl", "line 3 names '0000.png' again")


def test_oversized_caption_is_cut_and_reported(area):
    root = caption_dataset(area / "input" / "ds", n=2)
    (root / "0001.txt").write_text("<my_token> " + "word " * 40_000)
    reported(area, root, F.CAPTION_TOO_LONG, "0001.txt", "only its start is used")


def test_metadata_naming_a_non_picture(area):
    root = meta_dataset(area, "notes.txt")
    (root / "images" / "notes.txt").write_text("hello")
    reported(area, root, F.UNSUPPORTED_FILE, "images/notes.txt", "only .png, .jpg")


def test_year_like_folder_is_not_a_repeat_count(area):
    root = caption_dataset(area / "input" / "ds" / "2024_urlaub", n=2)
    rep = reported(area, root.parent, F.BAD_REPEATS, "2024_urlaub/0000.png", "2024 repeats is outside 1–100")
    assert rep.stats["samples_per_epoch"] == 2


# ------------------------------------------------------------------ empty and unreadable (6)
def test_empty_folder(area):
    (area / "input" / "empty").mkdir()
    e = raises(area, lambda: check_dataset(area / "input" / "empty", resolution=256), "No training images found",
               exc=DatasetCheckError)
    assert e.report.files(F.NO_IMAGES) == [""]
    raises(area, lambda: load_dataset(area / "input" / "empty"), "No training images")


def test_only_unreadable_pictures(area):
    root = area / "input" / "ds"
    root.mkdir()
    for n in ("a", "b"):
        (root / f"{n}.png").write_bytes(b"")
        (root / f"{n}.txt").write_text("<my_token>")
    e = raises(area, lambda: check_dataset(root, resolution=256), "BLOCKED", "No training images found",
               "[UNREADABLE_IMAGE]", exc=DatasetCheckError)
    assert sorted(e.report.files(F.UNREADABLE_IMAGE)) == ["a.png", "b.png"]


def test_missing_folder_and_a_file_instead_of_a_folder(area):
    raises(area, lambda: check_dataset(area / "input" / "nope", resolution=256), "Dataset folder not found")
    (area / "input" / "data.zip").write_bytes(b"PK")
    raises(area, lambda: check_dataset(area / "input" / "data.zip", resolution=256), "is not a folder",
           "unpack the ZIP first")


def test_folder_the_server_may_not_read(area, monkeypatch):
    root = caption_dataset(area / "input" / "ds", n=2)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if Path(p) == root else real(p, mode, *a, **k))
    raises(area, lambda: check_dataset(root, resolution=256), "cannot be read by this process",
           "Fix: check its permissions")


@pytest.mark.skipif(IS_ROOT, reason="root reads every folder; the monkeypatched test above covers the message")
def test_folder_the_server_may_not_read_for_real(area):
    root = caption_dataset(area / "input" / "ds", n=2)
    root.chmod(0)
    try:
        raises(area, lambda: check_dataset(root, resolution=256), "cannot be read by this process")
    finally:
        root.chmod(0o755)


def test_unreadable_subfolder_is_reported_and_the_rest_loads(area, monkeypatch):
    root = caption_dataset(area / "input" / "ds", n=2)
    caption_dataset(root / "locked", n=1, start=5)
    real = os.scandir

    def scandir(p="."):
        if Path(p) == root / "locked":
            raise PermissionError(13, "Permission denied", str(p))
        return real(p)

    monkeypatch.setattr(os, "scandir", scandir)
    rep = reported(area, root, F.UNREADABLE_FILE, "locked", "may not read it; skipped")
    assert rep.stats["images"] == 2
