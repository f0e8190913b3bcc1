"""Two browser sessions on one server at once (headless Chromium, two browser contexts = two ComfyUI client ids),
both with the same graph open (so the same Train LoRA node id): A queues a tiny training run. Against the
frontend ComfyUI 0.3.64 bundles and the newest comfyui-frontend-package (LORA_STUDIO_NEW_FRONTEND, skipped without).

- One user (ComfyUI's default mode, a classroom on one account): only A's Train LoRA node gets the loss points,
  progress text and previews; B gets none of those events and sees the job only in the LoRA Studio sidebar's
  job table.
- --multi-user (each student their own ComfyUI user, the `comfy-user` header the frontend sends): B, another
  user, does not see A's job in the table at all, and B's cancel is refused with an error while A's run goes on.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.e2e.test_browser import (ARTIFACTS, BROWSER_SETTINGS, Page, chromium, launch_chromium,  # noqa: F401
                                    newest_frontend_root, open_ui)
from tests.e2e.test_nodes_e2e import copy_sample
from tests.e2e.test_studio_browser import STEPS, open_sidebar, queue_training, rows

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
REPO = Path(__file__).resolve().parents[2]


class ContextPage(Page):
    """A page in another browser context of the same Chromium (own storage, own ComfyUI client id)."""

    def close(self) -> None:
        import contextlib

        with contextlib.suppress(Exception):
            self.ws.close()


def context_page(first: Page, log_path: Path) -> ContextPage:
    import requests
    import websocket

    port = int((first.profile / "DevToolsActivePort").read_text().split()[0])
    browser = websocket.create_connection(requests.get(f"http://127.0.0.1:{port}/json/version", timeout=30)
                                          .json()["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
    try:
        def call(mid, method, **params):
            browser.send(json.dumps({"id": mid, "method": method, "params": params}))
            while True:
                msg = json.loads(browser.recv())
                if msg.get("id") == mid:
                    return msg["result"]

        ctx = call(1, "Target.createBrowserContext")["browserContextId"]
        target = call(2, "Target.createTarget", url="about:blank", browserContextId=ctx)["targetId"]
    finally:
        browser.close()
    return ContextPage(first.proc, f"ws://127.0.0.1:{port}/devtools/page/{target}", first.profile, log_path)


def _raw_js(p: Page, expr: str):
    return p.call("Runtime.evaluate", expression=expr, returnByValue=True).get("result", {}).get("value")


def login(p: Page, server, user: dict | None) -> None:
    """As the frontend's user dialog does: the user id in localStorage, then every fetch sends `comfy-user`."""
    if user:
        p.call("Page.navigate", url=server.url("/api/users"))
        time.sleep(1)
        _raw_js(p, f"localStorage['Comfy.userId'] = {json.dumps(user['id'])};"
                   f"localStorage['Comfy.userName'] = {json.dumps(user['name'])}; true")
    server.post("/settings", json=BROWSER_SETTINGS, headers={"comfy-user": user["id"]} if user else {}).raise_for_status()
    open_ui(p, server)


LISTEN = """
window.__ls = {loss: 0, text: 0, preview: 0, executed: 0, mine: null};
api.addEventListener('lora_studio.loss', () => window.__ls.loss++);
for (const t of ['progress_text', 'b_preview', 'b_preview_with_metadata']) api.addEventListener(t, () => {
  if (t === 'progress_text') window.__ls.text++; else window.__ls.preview++; });
api.addEventListener('executed', (e) => { if (String(e.detail?.node) === String(one('LoraStudio_TrainLoRA').id)) window.__ls.executed++; });
return true;"""

NODE_STATE = """const n = one('LoraStudio_TrainLoRA');
return {id: n.id, points: n.lossPoints.length, imgs: (n.imgs ?? []).length,
        previews: (app.nodePreviewImages?.[n.id] ?? app.nodePreviewImages?.[String(n.id)] ?? []).length,
        job: n.properties?.lora_studio_job ?? null, ev: window.__ls};"""


def _dataset(server) -> str:
    return copy_sample(server, "two_sessions_fox")


@pytest.fixture(scope="module", params=["one-user/bundled", "multi-user/bundled", "one-user/1.58", "multi-user/1.58"])
def shared(request, tmp_path_factory, sd15_checkpoint_file):
    """(mode, server, A's user, B's user) for each frontend (bundled 1.27, newest 1.58); users are {"id", "name"}
    in --multi-user mode, None otherwise."""
    mode, frontend = request.param.split("/")
    args = ("--multi-user",) if mode == "multi-user" else ()
    if frontend == "1.58":
        args += ("--front-end-root", newest_frontend_root(request))
    if not args:
        server = request.getfixturevalue("comfy_server")
        ckpt = server.checkpoints_dir / "sd15_random.safetensors"
        if not ckpt.exists():
            ckpt.symlink_to(sd15_checkpoint_file)
        yield request.param, server, None, None
        return
    request.getfixturevalue("comfy_server")  # skips without COMFYUI_PATH, like every e2e test
    from tests.e2e.conftest import running_comfy_server

    with running_comfy_server(tmp_path_factory.mktemp("comfy_two_sessions"), args) as server:
        (server.checkpoints_dir / "sd15_random.safetensors").symlink_to(sd15_checkpoint_file)
        users = [None, None]
        if mode == "multi-user":
            users = []
            for name in ("alice", "bob"):
                r = server.post("/users", json={"username": name})
                assert r.status_code == 200, r.text
                users.append({"id": r.json(), "name": name})
        yield request.param, server, *users


def test_two_sessions_at_once(shared, chromium):  # noqa: F811
    param, server, user_a, user_b = shared
    mode = param.replace("/", "_").replace(".", "")
    ARTIFACTS.mkdir(exist_ok=True)
    a = launch_chromium(ARTIFACTS / f"chromium_two_sessions_{mode}.log")
    b = context_page(a, ARTIFACTS / f"chromium_two_sessions_{mode}.log")
    try:
        for p in (a, b):
            for domain in ("Page", "Runtime"):
                p.call(f"{domain}.enable")
            p.call("Emulation.setDeviceMetricsOverride", width=1600, height=1000, deviceScaleFactor=1, mobile=False)
        login(a, server, user_a)
        login(b, server, user_b)
        ids = [p.js("return api.clientId ?? api.initialClientId ?? sessionStorage.getItem('clientId')") for p in (a, b)]
        assert all(ids) and ids[0] != ids[1], f"two sessions need two client ids: {ids}"
        tpl = (REPO / "example_workflows" / "Train a LoRA from a dataset folder.json").read_text(encoding="utf-8")
        b.js(f"await app.loadGraphData({tpl}, true, true, 'same graph'); return true;")
        for p in (a, b):
            p.js(LISTEN)
        name = f"two_sessions_{mode.replace('-', '_')}_{int(time.time())}"
        queue_training(a, _dataset(server), name)  # the same template: Train LoRA has the same node id in both
        open_sidebar(a)
        open_sidebar(b)

        seen_by_b, refused, deadline = [], None, time.monotonic() + 1200
        while time.monotonic() < deadline:
            row_a = next((r for r in rows(a) if r["name"] == name), None)
            seen_by_b += [r for r in rows(b) if r["name"] == name]
            if user_b and refused is None and row_a and row_a["status"] == "running":
                # B tries to cancel A's running job through the same route the sidebar's Cancel uses
                refused = b.js(f"""const r = await api.fetchApi('/lora_studio/jobs/' + encodeURIComponent({json.dumps(row_a['id'])}) + '/cancel', {{method: 'POST'}});
                    return {{status: r.status, body: await r.json()}};""")
            if row_a and row_a["status"] in ("finished", "failed", "cancelled") and row_a["spark"]:
                break
            time.sleep(0.5)
        assert row_a and row_a["status"] == "finished", (row_a, server.log_tail())
        a.screenshot(ARTIFACTS / f"two_sessions_{mode}_a.png")
        b.screenshot(ARTIFACTS / f"two_sessions_{mode}_b.png")
        b.js("await new Promise((r) => setTimeout(r, 2500)); return true;")  # B's table refreshes every 2 s
        seen_by_b += [r for r in rows(b) if r["name"] == name]
        state_a, state_b = a.js(NODE_STATE), b.js(NODE_STATE)

        assert state_a["id"] == state_b["id"], "both graphs must have the same Train LoRA node id"
        assert state_a["points"] >= STEPS and state_a["ev"]["loss"] >= STEPS, state_a
        assert state_a["ev"]["preview"] > 0 and state_a["ev"]["executed"] == 1 and state_a["job"], state_a
        assert state_b["points"] == 0 and state_b["imgs"] == 0 and state_b["previews"] == 0, state_b
        assert state_b["ev"] == {"loss": 0, "text": 0, "preview": 0, "executed": 0, "mine": None}, \
            f"B got events of A's run: {state_b['ev']}"
        if user_b is None:
            assert seen_by_b and seen_by_b[-1]["status"] == "finished", "B must see A's job in the job table"
        else:
            assert seen_by_b == [], f"{user_b['name']} saw {user_a['name']}'s job: {seen_by_b}"
            assert refused and refused["status"] in (403, 404) and refused["body"].get("error"), refused
            job_page = b.js(f"const r = await api.fetchApi('/lora_studio/jobs/' + encodeURIComponent({json.dumps(row_a['id'])}));"
                            "return {status: r.status, body: await r.json()};")
            assert job_page["status"] in (403, 404) and job_page["body"].get("error"), job_page
    finally:
        b.close()
        a.close()
