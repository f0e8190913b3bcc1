"""The LoRA Studio routes in a real ComfyUI: uploads (good and bad, with tree snapshots), the job table
while a run goes queued → running → finished, events only to the session that queued, cancel, and
another user's jobs in --multi-user mode."""
from __future__ import annotations

import io
import json
import threading
import time
import uuid
import zipfile
from pathlib import Path

import pytest

from tests.data_fixtures import snapshot, zip_bytes
from tests.e2e.test_nodes_e2e import api_prompt

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
FOX = REPO / "example_data" / "watercolor_fox"


def fox_zip(n: int = 4) -> bytes:
    """The sample dataset's first n pictures as a ZIP of its folder (the guide's layout)."""
    lines = (FOX / "metadata.jsonl").read_text().splitlines()[:n]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("watercolor_fox/metadata.jsonl", "\n".join(lines) + "\n")
        for line in lines:
            name = json.loads(line)["file"]
            zf.write(FOX / "images" / name, f"watercolor_fox/images/{name}")
    return buf.getvalue()


class WsClient:
    """A second browser session: its own client id and websocket."""

    def __init__(self, server, client_id: str | None = None):
        import websocket

        self.client_id = client_id or uuid.uuid4().hex
        self.messages: list[dict] = []
        self.binary: list[bytes] = []
        opened = threading.Event()

        def on_message(_ws, msg):
            if isinstance(msg, bytes):
                self.binary.append(msg)
            else:
                self.messages.append(json.loads(msg))

        self.app = websocket.WebSocketApp(f"ws://127.0.0.1:{server.port}/ws?clientId={self.client_id}",
                                          on_message=on_message, on_open=lambda _ws: opened.set())
        threading.Thread(target=self.app.run_forever, daemon=True).start()
        assert opened.wait(30), "websocket did not connect"

    def of_type(self, t: str) -> list[dict]:
        return [m["data"] for m in self.messages if m.get("type") == t]

    def close(self):
        self.app.close()


def _tree(server) -> dict:
    """Everything under the server's base folder except its log, database and ComfyUI's own user settings."""
    return {k: v for k, v in snapshot(server.base_dir).items()
            if not k.startswith(("comfyui.log", "comfyui.db", "user/")) and "__pycache__" not in k}


def _upload(server, files, name: str = "", headers=None):
    return server.post("/lora_studio/datasets" + (f"?name={name}" if name else ""), files=files,
                       headers=headers or {})


def test_upload_lists_reports_and_deletes(comfy_server):
    r = _upload(comfy_server, {"file": ("foxes.zip", fox_zip(), "application/zip")}, name="studio_foxes")
    assert r.status_code == 201, r.text
    entry = r.json()
    assert entry["name"] == "studio_foxes" and entry["report"]["ok"] and entry["report"]["stats"]["images"] == 4
    assert (comfy_server.input_dir / "studio_foxes" / "metadata.jsonl").is_file()
    listed = {d["name"]: d for d in comfy_server.get("/api/lora_studio/datasets").json()["datasets"]}
    assert listed["studio_foxes"]["mine"] and listed["studio_foxes"]["report"]["images"] == 4
    # the Load Dataset list offers it at once
    kind, opts = comfy_server.object_info("LoraStudio_LoadDataset")["input"]["required"]["dataset"]
    names = opts["options"] if kind == "COMBO" else kind  # a V3 combo: ("COMBO", {"options": [...]})
    assert "studio_foxes" in names
    info = comfy_server.get("/lora_studio/datasets/studio_foxes").json()
    assert info["report"]["stats"]["images"] == 4
    first = json.loads((FOX / "metadata.jsonl").read_text().splitlines()[0])["file"]
    thumb = comfy_server.get(f"/lora_studio/datasets/studio_foxes/thumb?file=images/{first}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg" and thumb.content[:2] == b"\xff\xd8"
    r = comfy_server.get("/api/lora_studio/datasets/studio_foxes", timeout=30)
    assert r.status_code == 200
    d = __import__("requests").delete(comfy_server.url("/lora_studio/datasets/studio_foxes"), timeout=30)
    assert d.status_code == 200, d.text
    assert not (comfy_server.input_dir / "studio_foxes").exists()


def _bomb() -> bytes:
    return zip_bytes({"images/0001.png": b"\0" * (300 << 20)})  # 300 MiB of zeros in ~300 KiB


def _escaping_zip() -> bytes:
    return zip_bytes({"../../output/evil.png": b"x"}, zipfile.ZIP_STORED)


BAD_UPLOADS = {
    "not a zip": ({"file": ("notes.zip", b"hello, this is text", "application/zip")}, "", 415, "not a ZIP"),
    "not a picture": ({"file": ("run.sh", b"#!/bin/sh\nrm -rf /", "text/x-sh")}, "", 415, "neither a ZIP"),
    "zip bomb": ({"file": ("bomb.zip", _bomb(), "application/zip")}, "", 422, "compress"),
    "escaping entry": ({"file": ("evil.zip", _escaping_zip(), "application/zip")}, "", 422, ".."),
    "escaping name": ({"file": ("foxes.zip", fox_zip(2), "application/zip")}, "../output", 400, "plain folder"),
    "too large": ({"file": ("big.zip", b"PK\x03\x04" + b"\0" * (10 << 20), "application/zip")}, "", 413, "limit"),
    "no file": ({"other": (None, "just a field")}, "", 400, "no file"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_gets_its_message_and_writes_nothing(comfy_server, case):
    files, name, status, fragment = BAD_UPLOADS[case]
    before = _tree(comfy_server)
    r = _upload(comfy_server, files, name=name)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"], r.json()
    assert "Traceback" not in r.text
    assert _tree(comfy_server) == before, "a refused upload wrote something"


def test_bad_names_and_ids_get_json_errors(comfy_server):
    import requests

    before = _tree(comfy_server)
    for method, path, status in (("get", "/lora_studio/jobs/no-such-job", 404),
                                 ("get", "/lora_studio/jobs/..%2F..%2Fcomfyui.db", 400),
                                 ("post", "/lora_studio/jobs/no-such-job/cancel", 404),
                                 ("get", "/lora_studio/jobs/no-such-job/lora", 404),
                                 ("delete", "/lora_studio/datasets/%2E%2E", 400),
                                 ("delete", "/lora_studio/datasets/..%2Foutput", 400),
                                 ("delete", "/lora_studio/datasets/nope", 404),
                                 ("get", "/lora_studio/datasets/nope/thumb?file=x.png", 404)):
        r = getattr(requests, method)(comfy_server.url(path), timeout=30)
        assert r.status_code == status, (path, r.status_code, r.text)
        assert r.json()["error"] and "Traceback" not in r.text
    r = comfy_server.post("/lora_studio/datasets", data=b"raw bytes", headers={"Content-Type": "application/zip"})
    assert r.status_code == 415 and "multipart" in r.json()["error"]
    assert _tree(comfy_server) == before


def test_run_shows_in_the_table_and_its_events_reach_only_the_session_that_queued(comfy_server, sd15_checkpoint):
    r = _upload(comfy_server, {"file": ("foxes.zip", fox_zip(), "application/zip")}, name="studio_run")
    assert r.status_code == 201, r.text
    mine, other = WsClient(comfy_server), WsClient(comfy_server)
    try:
        prompt = api_prompt(sd15_checkpoint.name, "studio_run", "studio_run", steps=3)
        body = {"prompt": prompt, "client_id": mine.client_id}
        pid = comfy_server.post("/prompt", json=body).json()["prompt_id"]
        seen, deadline = [], time.monotonic() + 900
        while time.monotonic() < deadline:
            rows = [j for j in comfy_server.get("/lora_studio/jobs").json()["jobs"] if j["prompt_id"] == pid]
            if rows:
                seen.append((rows[0]["status"], rows[0]["step"]))
                if rows[0]["status"] in ("finished", "failed", "cancelled"):
                    break
            time.sleep(0.3)
        statuses = [s for s, _ in seen]
        assert statuses[-1] == "finished", (seen, comfy_server.log_tail())
        assert "running" in statuses, seen
        comfy_server.assert_success(comfy_server.wait(pid, timeout=300))  # Save LoRA runs after Train LoRA
        row = next(j for j in comfy_server.get("/lora_studio/jobs").json()["jobs"] if j["prompt_id"] == pid)
        assert row["final_loss"] > 0 and len(row["sparkline"]) == 3 and row["preview"], row
        assert row["user"] == "default" and row["dataset"] == "studio_run" and row["lora"] == "studio_run.safetensors"
        time.sleep(1.0)
        loss = mine.of_type("lora_studio.loss")
        assert [d["step"] for d in loss] == [1, 2, 3] and all(d["prompt_id"] == pid for d in loss)
        assert mine.binary, "the session that queued got no progress text or preview"
        assert other.of_type("lora_studio.loss") == [] and other.binary == [], \
            "another browser session received this run's loss points, text or previews"
        assert not any(m.get("type") in ("progress", "executed") for m in other.messages)

        page = comfy_server.get(f"/lora_studio/jobs/{row['id']}").json()
        rec = page["record"]
        assert rec["prompt_id"] == pid and rec["client_id"] == mine.client_id and rec["user"] == "default"
        assert page["previews"] and page["differs"]["resolution"] == {"value": 64, "preset": 512}
        assert " train --job " in rec["command"]
        img = comfy_server.get(f"/lora_studio/jobs/{row['id']}/preview/{page['previews'][0]}")
        assert img.status_code == 200 and img.content[:4] == b"\x89PNG"
        lora = comfy_server.get(f"/lora_studio/jobs/{row['id']}/lora")
        assert lora.status_code == 200 and lora.content == (comfy_server.loras_dir / "studio_run.safetensors").read_bytes()
        assert comfy_server.get(f"/lora_studio/jobs/{row['id']}/record").json()["id"] == row["id"]
        assert comfy_server.post(f"/lora_studio/jobs/{row['id']}/cancel").status_code == 409
    finally:
        mine.close()
        other.close()


# ----------------------------------------------------------------------------------- --multi-user


@pytest.fixture(scope="module")
def multi_user_server(tmp_path_factory, sd15_checkpoint_file):
    from tests.e2e.conftest import running_comfy_server

    with running_comfy_server(tmp_path_factory.mktemp("comfy_multi"), ("--multi-user",),
                              {"LORA_STUDIO_OPERATORS": "teacher"}) as server:
        (server.checkpoints_dir / "sd15_random.safetensors").symlink_to(sd15_checkpoint_file)
        yield server


def _user(server, name: str) -> dict:
    r = server.post("/users", json={"username": name})
    assert r.status_code == 200, r.text
    return {"comfy-user": r.json()}


def test_multi_user_sees_and_cancels_only_their_own(multi_user_server):
    s = multi_user_server
    anna, ben = _user(s, "anna"), _user(s, "ben")
    teacher = _user(s, "teacher")
    r = _upload(s, {"file": ("foxes.zip", fox_zip(), "application/zip")}, name="anna_foxes", headers=anna)
    assert r.status_code == 201, r.text
    import requests

    r = requests.delete(s.url("/lora_studio/datasets/anna_foxes"), headers=ben, timeout=30)
    assert r.status_code == 403 and "another user" in r.json()["error"]
    # a long run queued by anna: ben neither sees nor cancels it; the teacher (operator) sees it
    prompt = api_prompt("sd15_random.safetensors", "anna_foxes", "anna_long", steps=400)
    pid = requests.post(s.url("/prompt"), json={"prompt": prompt, "client_id": "anna-tab"}, headers=anna,
                        timeout=60).json()["prompt_id"]
    try:
        def rows(h):
            return [j for j in requests.get(s.url("/lora_studio/jobs"), headers=h, timeout=30).json()["jobs"]
                    if j["prompt_id"] == pid]

        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not any(r["step"] for r in rows(anna)):
            time.sleep(0.5)
        mine = rows(anna)
        assert mine and mine[0]["status"] == "running" and mine[0]["step"], (mine, s.log_tail())
        assert rows(ben) == [] and rows(teacher), "ben saw anna's job, or the operator did not"
        assert requests.get(s.url(f"/lora_studio/jobs/{mine[0]['id']}"), headers=ben, timeout=30).status_code == 403
        r = requests.post(s.url(f"/lora_studio/jobs/{mine[0]['id']}/cancel"), headers=ben, timeout=30)
        assert r.status_code == 403 and "another user" in r.json()["error"]
        assert rows(anna)[0]["status"] == "running"
        r = requests.post(s.url(f"/lora_studio/jobs/{mine[0]['id']}/cancel"), headers=anna, timeout=30)
        assert r.status_code == 200, r.text
        entry = s.wait(pid, timeout=300)
        assert entry["status"]["status_str"] == "error"  # ComfyUI reports an interrupted prompt so
        deadline = time.monotonic() + 60
        while rows(anna)[0]["status"] == "running" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert rows(anna)[0]["status"] == "cancelled" and rows(anna)[0]["resumable"]
    finally:
        s.interrupt()
