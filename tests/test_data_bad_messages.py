"""Dataset messages: UTF-16 captions read right, each problem printed once, one unsafe path skips one item.

issue #11, class 13: UTF-16 captions came out as cp1252 mojibake; the CLI printed every dataset problem
twice (the check logged each finding, then the caller printed the report); one unsafe path blocked the
whole dataset. Now a BOM (or UTF-16's NULs) picks the codec, the check logs findings at DEBUG only and the
caller prints them once, and an unsafe path is a reported skip — blocking only when nothing is left.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from bad_input_checks import area, raises, reported  # noqa: F401 - area is a fixture
from conftest import REPO
from data_fixtures import caption_dataset, guide_dataset, huge_png, save, snapshot, textured

from trainer.data import DatasetCheckError, check_dataset, load_dataset
from trainer.data import findings as F

CAPTION = "<my_token> Käfer über Straße, 東京"


@pytest.mark.parametrize("data,enc", [
    (CAPTION.encode("utf-16"), "UTF-16"),  # Notepad's "Unicode": a BOM, little-endian
    (b"\xfe\xff" + CAPTION.encode("utf-16-be"), "UTF-16"),  # big-endian with its BOM
    (CAPTION.encode("utf-16-le"), "UTF-16"),  # no BOM: found by the NUL in every other byte
    (CAPTION.encode("utf-32"), "UTF-32"),
], ids=["utf16-bom-le", "utf16-bom-be", "utf16-no-bom", "utf32"])
def test_wide_caption_files_are_read_by_their_bom(area, data, enc):
    root = caption_dataset(area / "input" / "ds", n=2)
    (root / "0001.txt").write_bytes(data)
    reported(area, root, F.CAPTION_ENCODING, "0001.txt", f"read as {enc}", "save captions as UTF-8")
    assert load_dataset(root, "tok").samples[1].caption == "tok Käfer über Straße, 東京"


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be"])
def test_utf16_metadata_file_is_read_whole(area, codec):
    """Its line breaks are two bytes: splitting the bytes first would cut every line in half."""
    root = guide_dataset(area / "input" / "ds", n=2)
    text = (root / "metadata.jsonl").read_text().replace("detailed", "Käfer")
    (root / "metadata.jsonl").write_bytes((b"\xfe\xff" if codec == "utf-16-be" else b"") + text.encode(codec))
    rep = reported(area, root, F.CAPTION_ENCODING, "metadata.jsonl", "is saved as UTF-16")
    assert len(rep.files(F.CAPTION_ENCODING)) == 1 and not rep.files(F.BAD_METADATA_LINE)
    assert [s.caption for s in load_dataset(root, "tok").samples] == ["photo 0 of tok, Käfer", "photo 1 of tok, Käfer"]


def test_utf16_negative_prompts(area):
    root = caption_dataset(area / "input" / "ds", n=2)
    (root / "negative_prompts.txt").write_bytes("# mine\nunscharf\nwasserzeichen\n".encode("utf-16"))
    reported(area, root, F.CAPTION_ENCODING, "negative_prompts.txt", "read as UTF-16")
    assert load_dataset(root).negative_prompts == ["unscharf", "wasserzeichen"]


def _unsafe(area, root, kind):
    if kind == "symlink":
        (root / "stolen.png").symlink_to(area / "outside" / "secret.png")
        (root / "stolen.txt").write_text("<my_token>")
    elif kind == "metadata":
        with open(root / "metadata.jsonl", "a") as f:
            f.write(json.dumps({"file": "../../outside/secret.png", "prompt": "<my_token>"}) + "\n")
    else:  # a symlinked folder
        (root / "more").symlink_to(area / "outside", target_is_directory=True)


@pytest.mark.parametrize("kind", ["symlink", "metadata", "folder"])
def test_nothing_but_unsafe_paths_blocks_and_names_them(area, kind):
    root = area / "input" / "ds"
    root.mkdir()
    (root / "metadata.jsonl").write_text("")
    _unsafe(area, root, kind)
    e = raises(area, lambda: check_dataset(root, resolution=256), "BLOCKED", "No training images found",
               "[UNSAFE_PATH]", exc=DatasetCheckError)
    assert e.report.files(F.NO_IMAGES) == [""] and e.report.files(F.UNSAFE_PATH)


def test_several_unsafe_paths_skip_only_themselves(area):
    root = guide_dataset(area / "input" / "ds", n=3)
    for kind in ("symlink", "metadata", "folder"):
        _unsafe(area, root, kind)
    rep = reported(area, root, F.UNSAFE_PATH, "stolen.png", "skipped")
    assert rep.ok and rep.stats["images"] == 3 and len(rep.files(F.UNSAFE_PATH)) == 3


# ------------------------------------------------------------------ the CLI prints each problem once
def _bad_dataset(area):
    root = caption_dataset(area / "input" / "ds", n=2)
    (root / "0001.txt").write_bytes("<my_token>, Käfer".encode("utf-16"))
    huge_png(root / "bomb.png", 16000, 16000)
    (root / "bomb.txt").write_text("<my_token>")
    (root / "stolen.png").symlink_to(area / "outside" / "secret.png")
    try:
        save(textured(9), root / os.fsdecode(b"\xff.png"))
    except (OSError, UnicodeEncodeError):
        pass  # a file system that refuses such names: the other problems still count
    return root


def _cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "trainer", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, encoding="utf-8", timeout=600)


def _each_once(out: str, report) -> None:
    assert "Traceback" not in out and "Logging error" not in out, out
    for f in report.warnings + report.problems:
        problem = str(f).partition(" Fix: ")[0]
        assert out.count(problem) == 1, (problem, out)


def _report(root, trigger=""):
    """The report the CLI run makes (its default preset, 64 px): every finding of it must print once."""
    try:
        return check_dataset(root, resolution=64, trigger_token=trigger, preset_key="fotostudio")[1]
    except DatasetCheckError as e:
        return e.report


def test_cli_check_prints_each_finding_once(area):
    """`lora-studio check <folder>`: the report of a dataset with every kind of bad input, each line once."""
    root = _bad_dataset(area)
    report = _report(root)
    before = snapshot(area)
    r = _cli("check", str(root), "--resolution", "64", cwd=area)
    assert r.returncode == 0, r.stdout + r.stderr
    _each_once(r.stdout + r.stderr, report)
    for code in (F.UNREADABLE_IMAGE, F.CAPTION_ENCODING, F.UNSAFE_PATH):
        assert f"[{code}]" in r.stdout
    assert snapshot(area) == before


def test_cli_prints_each_blocking_problem_once(area):
    root = area / "input" / "ds"
    root.mkdir()
    _unsafe(area, root, "symlink")
    (root / "empty.png").write_bytes(b"")
    (root / "empty.txt").write_text("<my_token>")
    report = _report(root)
    assert not report.ok
    before = snapshot(area)
    r = _cli("train", "--dataset", str(root), "--base-model", str(area / "none.safetensors"), cwd=area)
    assert r.returncode == 2 and "BLOCKED" in r.stderr
    _each_once(r.stdout + r.stderr, report)
    assert snapshot(area) == before


def test_job_json_trains_past_every_bad_input_and_writes_only_its_outputs(area, tiny_sd15):
    """The run the issue lost after the model had loaded: bomb, UTF-16 caption, unsafe link, undecodable
    name — all skipped or read, the LoRA written, the record valid JSON, nothing else touched."""
    from conftest import tiny_overrides

    root = _bad_dataset(area)
    report = _report(root, "wcfox")
    cfg = tiny_overrides(area / "run", tiny_sd15, root, max_train_steps=2, preview_every=-1, report_to=[],
                         train_batch_size=1)
    (area / "job.json").write_text(json.dumps(cfg))
    before = snapshot(area)
    r = _cli("train", "--job", str(area / "job.json"), cwd=area)
    assert r.returncode == 0, r.stdout + r.stderr
    _each_once(r.stdout + r.stderr, report)
    after = snapshot(area)
    changed = {k for k in set(before) ^ set(after)} | {k for k in before if k in after and before[k] != after[k]}
    assert changed and all(k == "run" or k.startswith(("run/loras", "run/jobs", "run/cache")) for k in changed), changed
    assert not [k for k in after if ".partial" in k or k.endswith(".tmp")]
    record = json.loads(next((area / "run" / "jobs").glob("*.json")).read_text(encoding="utf-8"))
    assert record["status"] == "finished" and record["dataset"]["images"] == 2
