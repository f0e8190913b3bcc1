"""trainer/studio without a server: the job table, visibility by user, uploads and their refusals.

The routes (nodes/routes.py) are thin over these; tests/e2e/test_studio_routes.py runs them in a real ComfyUI.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from tests.data_fixtures import caption_dataset, folder_entries, guide_dataset, save, snapshot, textured, zip_bytes
from trainer.presets import apply_preset
from trainer.studio import DatasetStore, JobStore, StudioError, Viewer
from trainer.studio.jobs import job_file, job_page, settings_differing_from_preset, sparkline
from trainer.studio.uploads import MAX_UPLOAD_ENV


def _record(jobs: Path, job_id: str, user: str, status: str = "finished", created: str = "2026-12-01T10:00:00",
            losses=(0.5, 0.4, 0.3), prompt_id: str | None = None, **cfg) -> dict:
    config = apply_preset("fotostudio", dict(name=job_id, dataset="/in/fox", base_model="/m/sd15.safetensors",
                                             **cfg)).to_dict()
    rec = {"id": job_id, "status": status, "created": created, "config": config, "user": user,
           "folder": str(jobs / job_id), "prompt_id": prompt_id or f"p-{job_id}", "command": f"cmd {job_id}",
           "metrics": {"losses": list(losses), "steps": len(losses)} if status == "finished" else {}}
    jobs.mkdir(parents=True, exist_ok=True)
    (jobs / f"{job_id}.json").write_text(json.dumps(rec), encoding="utf-8")
    return rec


# ----------------------------------------------------------------------------------- jobs


def test_table_is_newest_first_and_each_user_sees_their_own(tmp_path, monkeypatch):
    monkeypatch.delenv("LORA_STUDIO_OPERATORS", raising=False)
    jobs = tmp_path / "jobs"
    _record(jobs, "a1", "anna", created="2026-12-01T10:00:00")
    _record(jobs, "b1", "ben", created="2026-12-01T11:00:00")
    _record(jobs, "a2", "anna", status="failed", created="2026-12-01T12:00:00")
    (jobs / "broken.json").write_text("{not json", encoding="utf-8")  # must not hide the others
    store = JobStore(jobs)
    assert [s["id"] for s in store.summaries(Viewer.of("anna"))] == ["a2", "a1"]
    assert [s["id"] for s in store.summaries(Viewer.of("ben"))] == ["b1"]
    monkeypatch.setenv("LORA_STUDIO_OPERATORS", "teacher")
    assert [s["id"] for s in store.summaries(Viewer.of("teacher"))] == ["a2", "b1", "a1"]
    s = store.summaries(Viewer.of("anna"))[1]
    assert s["final_loss"] == pytest.approx(0.3) and s["sparkline"] == pytest.approx([0.5, 0.4, 0.3])
    assert s["status"] == "finished" and s["preset"] == "fotostudio" and s["dataset"] == "fox"
    assert store.summaries(Viewer.of("anna"))[0]["resumable"] is True


def test_record_of_another_user_and_bad_ids_are_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("LORA_STUDIO_OPERATORS", raising=False)
    jobs = tmp_path / "jobs"
    _record(jobs, "b1", "ben")
    store = JobStore(jobs)
    assert store.record("b1", Viewer.of("ben"))["id"] == "b1"
    for job_id, status in (("b1", 403), ("nope", 404), ("../b1", 400), ("..", 400), ("a/b", 400), ("", 400)):
        with pytest.raises(StudioError) as e:
            store.record(job_id, Viewer.of("anna"))
        assert e.value.status == status, (job_id, str(e.value))
        assert "Fix:" in str(e.value) or status == 403


def test_live_progress_queued_prompts_and_stale_runs(tmp_path):
    jobs = tmp_path / "jobs"
    _record(jobs, "r1", "default", status="running", prompt_id="p1")
    _record(jobs, "r2", "default", status="running", prompt_id="p2", created="2026-12-01T09:00:00")
    store = JobStore(jobs)
    live = {"p1": {"step": 7, "total": 800, "eta_s": 90.0, "losses": [0.9, 0.8]}}
    queued = [{"prompt_id": "p3", "user": "default", "name": "next", "created": "2026-12-01T13:00:00"},
              {"prompt_id": "p1", "user": "default", "running": True},  # has its record: listed once
              {"prompt_id": "p4", "user": "ben"}]
    rows = {s["id"]: s for s in store.summaries(Viewer.of("default"), live, queued, running_prompts={"p1"})}
    assert set(rows) == {"r1", "r2", "p3"}
    assert rows["r1"]["status"] == "running" and rows["r1"]["step"] == 7 and rows["r1"]["eta_s"] == 90.0
    assert rows["r1"]["sparkline"] == [0.9, 0.8] and rows["r1"]["cancellable"]
    assert rows["r2"]["status"] == "stopped" and rows["r2"]["resumable"]  # the server restarted during it
    assert rows["p3"]["status"] == "queued" and rows["p3"]["cancellable"]


def test_sparkline_keeps_the_shape_of_a_long_curve():
    vals = [1.0 - i / 4000 for i in range(4000)]
    s = sparkline(vals, 48)
    assert len(s) == 48 and s == sorted(s, reverse=True) and s[0] == pytest.approx(1 - 41.5 / 4000, abs=1e-3)


def test_job_page_lists_previews_differing_settings_and_serves_only_its_files(tmp_path):
    jobs = tmp_path / "jobs"
    rec = _record(jobs, "j1", "default", rank=4, learning_rate=2e-4)
    save(textured(1, (64, 64)), jobs / "j1" / "previews" / "preview-step000010-0.png")
    page = job_page(rec)
    assert page["previews"] == ["preview-step000010-0.png"] and page["summary"]["preview"] == page["previews"][0]
    assert set(page["differs"]) == {"rank", "learning_rate"} and page["differs"]["rank"] == {"value": 4, "preset": 8}
    assert job_file(rec, "preview", "preview-step000010-0.png").is_file()
    for kind, name, status in (("preview", "../j1.json", 400), ("preview", "nope.png", 404), ("lora", "", 404),
                               ("record", "", 400)):
        with pytest.raises(StudioError) as e:
            job_file(rec, kind, name)
        assert e.value.status == status
    assert settings_differing_from_preset(apply_preset("galerie").to_dict()) == {}


# ----------------------------------------------------------------------------------- uploads


def _zip_of(folder: Path) -> bytes:
    return zip_bytes(folder_entries(folder, folder.name + "/"))


@pytest.fixture
def area(tmp_path):
    (tmp_path / "input").mkdir()
    (tmp_path / "outside").mkdir()
    return tmp_path


def _store(area: Path) -> DatasetStore:
    return DatasetStore(area / "input", area / "output" / "uploads", area / "temp")


def _upload(store: DatasetStore, user: str, files: list[tuple[str, bytes]], name: str = "", chunk: int = 4096):
    up = store.begin(user, name)
    try:
        for fname, data in files:
            up.add_file(fname)
            for i in range(0, len(data), chunk):
                up.write(data[i:i + chunk])
        return up.finish()
    finally:
        up.abort()


def test_zip_upload_is_imported_checked_listed_and_deleted_by_its_owner_only(area, monkeypatch):
    monkeypatch.delenv("LORA_STUDIO_OPERATORS", raising=False)
    src = guide_dataset(area / "src" / "foxes", n=12)
    save(textured(3, (96, 96)), src / "images" / "tiny.png")  # too small: flagged with a thumbnail
    with (src / "metadata.jsonl").open("a") as fh:
        fh.write(json.dumps({"file": "tiny.png", "prompt": "a tiny <my_token>"}) + "\n")
    store = _store(area)
    entry = _upload(store, "anna", [("foxes.zip", _zip_of(src))])
    assert entry["name"] == "foxes" and (area / "input" / "foxes" / "metadata.jsonl").is_file()
    assert entry["report"]["ok"] and entry["report"]["stats"]["images"] == 13
    tiny = [f for f in entry["flagged"] if f["file"] == "images/tiny.png"]
    assert tiny and "LOW_RESOLUTION" in tiny[0]["codes"] and tiny[0]["caption"].startswith("a tiny")
    assert store.picture("foxes", "images/tiny.png").is_file()
    again = _upload(store, "anna", [("foxes.zip", _zip_of(src))])
    assert again["name"] == "foxes-2", "an existing dataset is never written into"
    listed = {d["name"]: d for d in store.list(Viewer.of("ben"))}
    assert listed["foxes"]["uploaded_by"] == "anna" and not listed["foxes"]["mine"]
    assert listed["foxes"]["report"]["ok"] and listed["foxes"]["report"]["images"] == 13
    with pytest.raises(StudioError) as e:
        store.delete("foxes", Viewer.of("ben"))
    assert e.value.status == 403 and (area / "input" / "foxes").is_dir()
    store.delete("foxes", Viewer.of("anna"))
    assert not (area / "input" / "foxes").exists() and "foxes" not in {d["name"] for d in store.list(Viewer.of("anna"))}
    assert not list((area / "temp").iterdir()), "the staging files are gone"


def test_pictures_with_captions_upload_without_a_zip(area):
    src = caption_dataset(area / "src", n=10)
    store = _store(area)
    entry = _upload(store, "default", [(p.name, p.read_bytes()) for p in sorted(src.iterdir())], name="my set")
    assert entry["name"] == "my set" and len(list((area / "input" / "my set").glob("*.png"))) == 10
    assert entry["report"]["ok"]


def _bomb() -> bytes:
    return zip_bytes({"images/0001.png": b"\0" * (64 << 20)})


def _evil_zip() -> bytes:
    return zip_bytes({"../outside/evil.png": b"x"}, zipfile.ZIP_STORED)


@pytest.mark.parametrize("files,name,status,fragment", [
    ([("notes.zip", b"this is no zip at all")], "", 415, "not a ZIP"),
    ([("virus.exe", b"MZ....")], "", 415, "neither a ZIP"),
    ([("bomb.zip", _bomb())], "", 422, "compress"),
    ([("evil.zip", _evil_zip())], "", 422, ".."),
    ([("a.zip", b"PK\x05\x06" + b"\0" * 18)], "", 422, "ZIP"),
    ([("a.png", b"x"), ("a.png", b"y")], "", 400, "twice"),
    ([("a.zip", b"PK\x03\x04"), ("b.png", b"y")], "", 400, "one ZIP"),
    ([("ok.png", b"not a picture"), ("ok.txt", b"caption")], "", 422, "Nothing was kept"),
    ([("x.png", b"x")], "../outside", 400, "plain folder name"),
])
def test_bad_uploads_get_their_message_and_write_nothing(area, files, name, status, fragment):
    store = _store(area)
    (area / "temp").mkdir()
    before = snapshot(area)
    with pytest.raises(StudioError) as e:
        _upload(store, "anna", files, name=name)
    assert e.value.status == status and fragment in str(e.value), str(e.value)
    assert snapshot(area) == before, "a refused upload left something behind"


def test_upload_over_the_limit_stops_while_streaming(area, monkeypatch):
    monkeypatch.setenv(MAX_UPLOAD_ENV, str(1 << 20))
    store = _store(area)
    (area / "temp").mkdir()
    before = snapshot(area)
    with pytest.raises(StudioError) as e:
        store.begin("anna", "", content_length=5 << 20)
    assert e.value.status == 413
    up = store.begin("anna")
    up.add_file("big.zip")
    with pytest.raises(StudioError) as e:
        for _ in range(3):
            up.write(b"PK\x03\x04" + b"\0" * (512 << 10))
    up.abort()
    assert e.value.status == 413 and "limit" in str(e.value)
    assert snapshot(area) == before


def test_only_names_inside_the_input_folder(area):
    store = _store(area)
    (area / "input" / "link").symlink_to(area / "outside")
    for name, status in (("../outside", 400), ("link", 404), (".hidden", 400), ("nope", 404)):
        with pytest.raises(StudioError) as e:
            store.delete(name, Viewer.of("anna"))
        assert e.value.status == status, name
    caption_dataset(area / "input" / "plain", n=2)
    with pytest.raises(StudioError) as e:
        store.delete("plain", Viewer.of("anna"))
    assert e.value.status == 403 and "not uploaded" in str(e.value)
    for file in ("../../outside/x.png", "/etc/passwd", "0000.txt"):
        with pytest.raises(StudioError):
            store.picture("plain", file)


def test_operators_may_be_named_by_user_name_or_id(monkeypatch):
    monkeypatch.setenv("LORA_STUDIO_OPERATORS", "teacher, anna_1234")
    assert Viewer.of("teacher_5f3e", "teacher").operator and Viewer.of("anna_1234").operator
    assert not Viewer.of("ben_77", "ben").operator and not Viewer.of("teacher_5f3e").operator
