"""Load Dataset's cache key: unchanged folder → same value (ComfyUI keeps its cached result); an added,
removed, edited or replaced file → a new value (the graph trains again)."""
from __future__ import annotations

import importlib
import os
import time

from conftest import load_nodes

from tests.data_fixtures import caption_dataset
from trainer.data.fingerprint import dataset_fingerprint


def test_fingerprint_follows_the_files_not_the_reads(tmp_path):
    root = caption_dataset(tmp_path / "ds", n=3)
    first = dataset_fingerprint(root)
    assert dataset_fingerprint(root) == first
    (root / "0000.png").read_bytes()  # reading changes nothing
    assert dataset_fingerprint(root) == first
    seen = {first}
    cap = root / "0001.txt"
    cap.write_text("<my_token>, edited", encoding="utf-8")
    st = cap.stat()
    os.utime(cap, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    for change in (lambda: None,
                   lambda: (root / "0003.txt").write_text("new", encoding="utf-8"),
                   lambda: (root / "0000.txt").unlink(),
                   lambda: (root / "0002.png").rename(root / "0009.png")):
        change()
        now = dataset_fingerprint(root)
        assert now not in seen
        seen.add(now)
    (root / ".DS_Store").write_bytes(b"x")  # hidden files are no part of a dataset
    assert dataset_fingerprint(root) == now


def test_load_dataset_fingerprint_inputs_uses_it(tmp_path, monkeypatch):
    load_nodes()  # the V3 node needs ComfyUI's comfy_api; skipped, saying why, without it
    mod = importlib.import_module("lora_studio_pack.nodes.dataset")
    monkeypatch.setattr(mod, "allowed_roots", lambda: [tmp_path])
    caption_dataset(tmp_path / "ds", n=2)
    a = mod.LoadDataset.fingerprint_inputs("ds", "wcfox")
    assert a == mod.LoadDataset.fingerprint_inputs("ds", "wcfox")
    assert a != mod.LoadDataset.fingerprint_inputs("ds", "other")
    time.sleep(0.01)
    (tmp_path / "ds" / "extra.txt").write_text("x", encoding="utf-8")
    assert a != mod.LoadDataset.fingerprint_inputs("ds", "wcfox")
    assert mod.LoadDataset.fingerprint_inputs("../outside", "x").startswith("unresolved:")
