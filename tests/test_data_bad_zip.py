"""ZIP bombs that pass every per-entry check: refused as a whole, before a single byte is written.

issue #11, class 3: 300 entries of (1 MiB - 1) zero bytes (a 376 KB ZIP) used to unpack 301 MB. The
import now judges what it would write as a whole (size budget, overall ratio against the ZIP's own
size, overlapping entries, free disk space), through the library, the Load Dataset node's ZIP path
and the CLI, and leaves the input folder exactly as it was.
"""
from __future__ import annotations

import importlib
import zipfile

import pytest
from bad_input_checks import area, raises  # noqa: F401 - area is a fixture
from conftest import load_nodes
from data_fixtures import (caption_dataset, folder_entries, lie_about_sizes, overlapping_zip, snapshot, zeros_zip,
                           zip_of)

from trainer.cli import main
from trainer.data import ZipLimits, import_zip
from trainer.data import zipimport

MIB = 1 << 20


def _refused(area, z, *fragments, **kw):
    e = raises(area, lambda: import_zip(z, area / "input", **kw), *fragments, "Nothing was extracted")
    assert list((area / "input").iterdir()) == []  # no target, no temp folder
    assert "Traceback" not in str(e)
    return e


def _dataset(area) -> dict[str, bytes]:
    return folder_entries(caption_dataset(area / "src", n=2))


def test_many_small_entries_bomb_is_refused_as_a_whole(area):
    """The issue's example: every entry is under the per-entry ratio floor, the sum is not."""
    z = zeros_zip(area / "upload.zip", [f"images/{i:04d}.png" for i in range(300)], MIB - 1)
    assert z.stat().st_size < 600_000
    e = _refused(area, z, "would write 300.0 MiB", "as a whole is compressed", "more than the limit of 200:1",
                 "the mark of a ZIP bomb")
    assert f"({z.stat().st_size / 1024:.1f} KiB)" in str(e)


@pytest.mark.parametrize("names,compression", [
    ([f"{i:04d}.txt" for i in range(300)], zipfile.ZIP_DEFLATED),  # caption files, not pictures
    ([f"10_fox/{i:04d}.png" for i in range(40)], zipfile.ZIP_BZIP2),  # another method, a kohya folder
    ([f"deep/er/{i:04d}.webp" for i in range(40)], zipfile.ZIP_LZMA),
])
def test_many_small_entries_bomb_variants(area, names, compression):
    z = zeros_zip(area / "upload.zip", names, MIB - 1, compression=compression)
    _refused(area, z, "as a whole is compressed", "the mark of a ZIP bomb")


def test_bomb_hidden_beside_a_real_dataset_is_refused(area):
    z = zeros_zip(area / "upload.zip", [f"images/pad{i:03d}.png" for i in range(120)], MIB - 1,
                  extra=_dataset(area))
    _refused(area, z, "as a whole is compressed")


@pytest.mark.parametrize("step", [0, 7])
def test_overlapping_entries_are_refused(area, step):
    """Many names pointing at one piece of data (0: the same offset; 7: each header inside the previous data)."""
    z = overlapping_zip(area / "upload.zip", [f"images/{i:04d}.png" for i in range(50)], b"\x00" * (MIB - 1), step)
    _refused(area, z, "share their data", "a crafted archive")


@pytest.mark.parametrize("claimed,shown", [(1000 * MIB, "is compressed"),  # more than inside: the ratio
                                            (10, "")])  # less than inside: caught while streaming
def test_lying_headers_are_refused(area, claimed, shown):
    z = lie_about_sizes(zip_of(_dataset(area), area / "upload.zip", compression=zipfile.ZIP_STORED), claimed)
    e = _refused(area, z, shown)
    assert shown or "damaged or crafted" in str(e) or "is not a readable ZIP file" in str(e)


def test_default_budget_is_4_gib(area, monkeypatch):
    monkeypatch.setattr(zipimport, "MAX_ZIP_TOTAL_BYTES", 2000)  # the module constants are the defaults
    _refused(area, zip_of(_dataset(area), area / "upload.zip"), "more than the limit of 2.0 KiB")
    assert zipimport.ZipLimits().max_total_bytes == 4 << 30


@pytest.mark.parametrize("limit,shown", [(1000, "more than the limit of 1000 bytes"),
                                         (100 * 1024, "more than the limit of 100.0 KiB")])
def test_total_budget_counts_what_would_be_written(area, limit, shown):
    """Stored (1:1) entries: no ratio to catch, only the budget. Skipped files do not count against it."""
    entries = _dataset(area)
    written = sum(len(v) for v in entries.values())
    z = zip_of(entries | {"notes.bin": b"\x01" * 300_000}, area / "upload.zip", compression=zipfile.ZIP_STORED)
    if written <= limit:
        assert import_zip(z, area / "input", limits=ZipLimits(max_total_bytes=limit)).is_dir()
    else:
        _refused(area, z, shown, "for one dataset", limits=ZipLimits(max_total_bytes=limit))


def test_a_small_archive_may_compress_extremely(area):
    """Below the whole-archive floor a flat picture compressing 1000:1 is no threat: it imports."""
    z = zeros_zip(area / "upload.zip", ["images/white.png"], 400_000, extra=_dataset(area))
    target = import_zip(z, area / "input")
    assert (target / "images" / "white.png").stat().st_size == 400_000


def test_the_whole_archive_ratio_accepts_real_pictures(area, monkeypatch):
    monkeypatch.setattr(zipimport, "RATIO_MIN_TOTAL_BYTES", 0)  # judge even this tiny archive
    assert sorted(p.name for p in import_zip(zip_of(_dataset(area), area / "upload.zip"), area / "input").iterdir()) \
        == ["0000.png", "0000.txt", "0001.png", "0001.txt"]


@pytest.mark.parametrize("free", [0, 100 * MIB])
def test_not_enough_disk_space_is_refused_before_writing(area, monkeypatch, free):
    real = zipimport.shutil.disk_usage
    monkeypatch.setattr(zipimport.shutil, "disk_usage", lambda p: real(p)._replace(free=free))
    _refused(area, zip_of(_dataset(area), area / "upload.zip"), "are free there", "Fix: free disk space")


@pytest.fixture
def load_dataset_node(area, monkeypatch):
    load_nodes()  # the node runs on ComfyUI's comfy_api (V3); skips, saying why, without it
    dataset = importlib.import_module("lora_studio_pack.nodes.dataset")
    monkeypatch.setattr(dataset, "input_dir", lambda: area / "input")
    monkeypatch.setattr(importlib.import_module("lora_studio_pack.nodes.comfy_bridge"), "input_dir",
                        lambda: area / "input")
    return dataset


@pytest.mark.parametrize("kind", ["small_entries", "overlapping"])
def test_load_dataset_node_refuses_a_bomb_in_the_input_folder(area, load_dataset_node, kind):
    z = area / "input" / "upload.zip"
    if kind == "small_entries":
        zeros_zip(z, [f"images/{i:04d}.png" for i in range(300)], MIB - 1)
    else:
        overlapping_zip(z, [f"images/{i:04d}.png" for i in range(50)], b"\x00" * (MIB - 1))
    before = snapshot(area)
    with pytest.raises(Exception) as e:
        load_dataset_node.LoadDataset.execute("upload.zip", "tok")
    assert type(e.value).__name__ == "DatasetError" and "Nothing was extracted" in str(e.value)
    assert snapshot(area) == before


def test_cli_with_a_zip_as_dataset_explains_and_writes_nothing(area, capsys):
    z = zeros_zip(area / "input" / "upload.zip", [f"images/{i:04d}.png" for i in range(30)], MIB - 1)
    before = snapshot(area)
    assert main(["train", "--base-model", str(area / "none.safetensors"), "--dataset", str(z),
                 "--jobs-dir", str(area / "jobs"), "--output-dir", str(area / "loras")]) == 2
    out = capsys.readouterr()
    assert "is not a folder" in out.err and "ZIP import" in out.err and "Traceback" not in out.out + out.err
    assert snapshot(area) == before


@pytest.mark.parametrize("kind", ["small_entries", "overlapping", "lying_header"])
def test_cli_import_refuses_each_bomb_and_writes_nothing(area, capsys, kind):
    """`lora-studio import` (python -m trainer import) goes through the same limits."""
    z = area / "upload.zip"
    if kind == "small_entries":
        zeros_zip(z, [f"images/{i:04d}.png" for i in range(300)], MIB - 1)
    elif kind == "overlapping":
        overlapping_zip(z, [f"images/{i:04d}.png" for i in range(50)], b"\x00" * (MIB - 1))
    else:
        lie_about_sizes(zip_of(_dataset(area), z, compression=zipfile.ZIP_STORED), 1000 * MIB)
    before = snapshot(area)
    assert main(["import", str(z), "--dest", str(area / "input")]) == 2
    out = capsys.readouterr()
    assert "Nothing was extracted" in out.err and "Traceback" not in out.out + out.err
    assert snapshot(area) == before
