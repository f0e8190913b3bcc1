"""Assertions shared by the bad-input tests: a clear message, a reported skip, and an untouched tree."""
from __future__ import annotations

import os

import pytest

from data_fixtures import save, snapshot, textured
from trainer.data import DatasetCheckError, check_dataset
from trainer.errors import DatasetError

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def area(tmp_path):
    """tmp/input (the allowed root, ComfyUI's input folder) and tmp/outside (must stay untouched)."""
    (tmp_path / "input").mkdir()
    (tmp_path / "outside").mkdir()
    save(textured(77), tmp_path / "outside" / "secret.png")
    (tmp_path / "outside" / "secret.txt").write_text("<my_token> secret")
    return tmp_path


def raises(tmp, fn, *fragments, exc=DatasetError):
    """fn fails with a message holding every fragment, and nothing under tmp changed."""
    before = snapshot(tmp)
    with pytest.raises(exc) as e:
        fn()
    for f in fragments:
        assert f in str(e.value), (f, str(e.value))
    assert snapshot(tmp) == before
    return e.value


def reported(tmp, root, code, file, *fragments, **kw):
    """check_dataset reports `code` for `file` with the fragments (problems raise with the report)."""
    before = snapshot(tmp)
    try:
        _, report = check_dataset(root, resolution=256, trigger_token="tok", **kw)
    except DatasetCheckError as e:
        report = e.report
        assert str(e) == report.to_text()
    assert snapshot(tmp) == before
    hits = [f for f in report.problems + report.warnings if f.code == code and f.file == file]
    assert hits, (code, file, report.to_text())
    for frag in fragments:
        assert any(frag in f.message for f in hits), (frag, [f.message for f in hits])
    return report
