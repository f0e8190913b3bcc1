"""Pictures from memory (a ComfyUI graph) → a dataset folder that the ordinary checks and cache accept."""
from __future__ import annotations

import numpy as np
import pytest

from trainer.data import check_dataset
from trainer.data.from_images import split_captions, write_image_dataset
from trainer.errors import DatasetError


def _pictures(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # smooth random scenes (not noise: the blur and duplicate checks should see ordinary pictures)
    out = []
    for _ in range(n):
        small = rng.random((8, 8, 3)).astype(np.float32)
        out.append(np.kron(small, np.ones((size // 8, size // 8, 1), dtype=np.float32)))
    return out


def test_graph_pictures_become_a_checked_dataset(tmp_path):
    root = write_image_dataset(_pictures(4), ["a photo of <my_token>"], tmp_path, "graph")
    assert root.parent == tmp_path and root.name.startswith("graph-")
    assert sorted(p.name for p in (root / "images").iterdir()) == ["0001.png", "0002.png", "0003.png", "0004.png"]
    ds, report = check_dataset(root, resolution=64, trigger_token="sks", allowed_roots=[tmp_path])
    assert len(ds.samples) == 4 and not report.problems
    assert all(s.caption == "a photo of sks" for s in ds.samples)


def test_one_caption_per_line_in_batch_order(tmp_path):
    root = write_image_dataset(_pictures(2), split_captions("first <my_token>\n\n second <my_token> \n"), tmp_path, "g")
    ds, _ = check_dataset(root, resolution=64, trigger_token="sks", allowed_roots=[tmp_path])
    assert [s.caption for s in sorted(ds.samples, key=lambda s: s.path.name)] == ["first sks", "second sks"]


def test_the_same_pictures_reuse_their_folder_and_others_get_their_own(tmp_path):
    a = write_image_dataset(_pictures(3), ["x"], tmp_path, "g")
    mtime = (a / "metadata.jsonl").stat().st_mtime_ns
    assert write_image_dataset(_pictures(3), ["x"], tmp_path, "g") == a
    assert (a / "metadata.jsonl").stat().st_mtime_ns == mtime  # not rewritten: the latent cache stays valid
    assert write_image_dataset(_pictures(3), ["y"], tmp_path, "g") != a  # a caption changes the set
    assert write_image_dataset(_pictures(3, seed=1), ["x"], tmp_path, "g") != a


@pytest.mark.parametrize("captions,words", [(["a", "b"], "3 pictures but 2 captions"), ([], "3 pictures but 0")])
def test_caption_count_mismatch_names_the_fix_and_writes_nothing(tmp_path, captions, words):
    with pytest.raises(DatasetError, match=words) as e:
        write_image_dataset(_pictures(3), captions, tmp_path, "g")
    assert "Fix:" in str(e.value) and list(tmp_path.iterdir()) == []


def test_bad_picture_shapes_and_empty_batches_are_explained(tmp_path):
    with pytest.raises(DatasetError, match="height × width × 3"):
        write_image_dataset([np.zeros((64, 64), np.float32)], ["x"], tmp_path, "g")
    with pytest.raises(DatasetError, match="No pictures"):
        write_image_dataset([], ["x"], tmp_path, "g")
    assert list(tmp_path.iterdir()) == []
