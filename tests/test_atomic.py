"""trainer/atomic.py, the one writer every output goes through: whole or nothing, never replaced unasked."""
from __future__ import annotations

import errno
import json
import os

import pytest

from trainer import atomic
from trainer.errors import ExportError
from trainer.runstate import clean_partials, is_partial


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def _full(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


# ------------------------------------------------------------------ a failure keeps the old file, leaves no partial
@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_disk_full_at_any_stage_keeps_the_old_file_and_leaves_no_partial(tmp_path, monkeypatch, where):
    target = tmp_path / "record.json"
    atomic.write_json_atomic(target, {"v": 1}, overwrite=False)
    write = lambda p: p.write_text('{"v": 2}')  # noqa: E731
    if where == "write":
        write = lambda p: (p.write_text('{"v": 2, "half'), _full())  # noqa: E731  a partial already has bytes
    else:
        monkeypatch.setattr(atomic.os, where, _full)
    with pytest.raises(ExportError) as e:
        atomic.write_atomic(target, write, overwrite=True)
    monkeypatch.undo()
    assert "No space left on device" in str(e.value) and "free disk space" in str(e.value) and str(target) in str(e.value)
    assert json.loads(target.read_text()) == {"v": 1}
    assert _names(tmp_path) == ["record.json"]


@pytest.mark.parametrize("error", [ValueError("a bug in the writer"), KeyboardInterrupt()])
def test_any_other_error_is_passed_on_unchanged_and_leaves_no_partial(tmp_path, error):
    def write(p):
        p.write_bytes(b"half")
        raise error

    with pytest.raises(type(error)):
        atomic.write_atomic(tmp_path / "x.bin", write, overwrite=False)
    assert _names(tmp_path) == []


def test_the_partial_is_hidden_beside_the_target_and_names_its_process(tmp_path):
    seen = []
    atomic.write_bytes_atomic(tmp_path / "lora.safetensors", b"abc", overwrite=False)
    atomic.write_atomic(tmp_path / "b.txt", lambda p: seen.append(p) or p.write_text("b"), overwrite=False)
    [p] = seen
    assert p.parent == tmp_path and p.name.startswith(f".b.txt.{os.getpid()}-") and is_partial(p)
    assert _names(tmp_path) == ["b.txt", "lora.safetensors"]
    assert (tmp_path / "lora.safetensors").read_bytes() == b"abc"


def test_a_killed_writers_partial_is_recognised_and_cleaned(tmp_path):
    dead = tmp_path / ".x.json.999999999-abc.partial"  # a pid that no process has
    dead.write_text("half")
    assert clean_partials(tmp_path) == [dead]


# ------------------------------------------------------------------ nothing replaced unasked
def test_without_overwrite_an_existing_file_is_kept_and_the_error_says_so(tmp_path):
    target = tmp_path / "a.txt"
    atomic.write_text_atomic(target, "first", overwrite=False)
    with pytest.raises(FileExistsError):
        atomic.write_text_atomic(target, "second", overwrite=False)
    assert target.read_text() == "first" and _names(tmp_path) == ["a.txt"]
    atomic.write_text_atomic(target, "second", overwrite=True)
    assert target.read_text() == "second" and _names(tmp_path) == ["a.txt"]


def test_overwrite_must_be_said(tmp_path):
    with pytest.raises(TypeError):
        atomic.write_json_atomic(tmp_path / "a.json", {})  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        with atomic.atomic_folder(tmp_path / "d"):  # type: ignore[call-arg]
            pass
    assert _names(tmp_path) == []


def test_a_missing_folder_is_made_and_a_file_in_the_way_is_named(tmp_path):
    assert atomic.write_text_atomic(tmp_path / "a" / "b" / "c.txt", "x", overwrite=False).read_text() == "x"
    (tmp_path / "blocker").write_text("a file")
    with pytest.raises(ExportError, match="is a file"):
        atomic.write_text_atomic(tmp_path / "blocker" / "c.txt", "x", overwrite=False)


# ------------------------------------------------------------------ modes follow the umask
@pytest.mark.parametrize("umask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775),
                                                      (0o077, 0o600, 0o700)])
def test_modes_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        f = atomic.write_bytes_atomic(tmp_path / "f.bin", b"x", overwrite=False)
        with atomic.atomic_folder(tmp_path / "d", overwrite=False) as d:
            (d / "inside.txt").write_text("y")
    finally:
        os.umask(old)
    assert f.stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "d").stat().st_mode & 0o777 == dir_mode


# ------------------------------------------------------------------ folders
def test_a_folder_appears_whole_or_not_at_all(tmp_path):
    final = tmp_path / "step-000002"
    with pytest.raises(OSError):
        with atomic.atomic_folder(final, overwrite=False) as d:
            (d / "adapter.safetensors").write_bytes(b"half")
            _full()
    assert _names(tmp_path) == []
    with atomic.atomic_folder(final, overwrite=False) as d:
        assert _names(tmp_path) == [d.name] and is_partial(d)  # under a hidden name while being filled
        (d / "adapter.safetensors").write_bytes(b"whole")
    assert _names(tmp_path) == ["step-000002"] and _names(final) == ["adapter.safetensors"]


def test_a_folder_is_not_replaced_unasked_and_replaced_whole_when_asked(tmp_path):
    final = tmp_path / "dataset"
    with atomic.atomic_folder(final, overwrite=False) as d:
        (d / "old.txt").write_text("old")
    with pytest.raises(FileExistsError):
        with atomic.atomic_folder(final, overwrite=False) as d:
            (d / "new.txt").write_text("new")
    assert _names(final) == ["old.txt"] and _names(tmp_path) == ["dataset"]
    with pytest.raises(RuntimeError):  # a failed replacement keeps the old folder
        with atomic.atomic_folder(final, overwrite=True) as d:
            (d / "new.txt").write_text("new")
            raise RuntimeError("stopped")
    assert _names(final) == ["old.txt"] and _names(tmp_path) == ["dataset"]
    with atomic.atomic_folder(final, overwrite=True) as d:
        (d / "new.txt").write_text("new")
    assert _names(final) == ["new.txt"] and _names(tmp_path) == ["dataset"]  # the old one is gone, not set aside


def test_a_folder_that_appears_while_writing_is_kept(tmp_path):
    final = tmp_path / "dataset"
    with pytest.raises(FileExistsError):
        with atomic.atomic_folder(final, overwrite=False) as d:
            (d / "ours.txt").write_text("ours")
            final.mkdir()
            (final / "theirs.txt").write_text("theirs")  # another run got there first
    assert _names(final) == ["theirs.txt"] and _names(tmp_path) == ["dataset"]


def test_a_picture_is_written_whole_and_replaced_only_when_asked(tmp_path):
    from PIL import Image

    path = atomic.write_png_atomic(tmp_path / "p.png", Image.new("RGB", (4, 4), (255, 0, 0)), overwrite=False)
    with pytest.raises(FileExistsError):
        atomic.write_png_atomic(path, Image.new("RGB", (4, 4), (0, 0, 255)), overwrite=False)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.getpixel((0, 0)) == (255, 0, 0)
    atomic.write_png_atomic(path, Image.new("RGB", (4, 4), (0, 0, 255)), overwrite=True)
    with Image.open(path) as im:
        assert im.getpixel((0, 0)) == (0, 0, 255)
    assert _names(tmp_path) == ["p.png"]
