"""The frontend extension in a real browser: headless Chromium (Chrome DevTools protocol over
websocket-client) against a real ComfyUI server with this pack installed.

It loads the UI, opens the example workflows, checks that they survive the frontend unchanged (the
same widgets_values after a load/save, the same API prompt as api/train_api.json), runs a tiny real
training from the browser (64 px, a few steps, the random SD1.5-shaped checkpoint), checks that the
loss chart on Train LoRA received the points, presses "Copy command" on Configure LoRA and reads the
clipboard, and shows the German locale. Screenshots go to test-artifacts/ (gitignored); the one of the
finished run also to docs/screenshots/training_run.png for the README.

Needs COMFYUI_PATH (see conftest.py) and Chromium at /usr/bin/chromium (or $CHROMIUM); skips, saying
which, where either is missing. LORA_STUDIO_BROWSER_STEPS sets the training steps (default 3).
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

if TYPE_CHECKING:
    from tests.e2e.conftest import ComfyServer

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e]
browser = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "test-artifacts"
README_SHOT = REPO_ROOT / "docs" / "screenshots" / "training_run.png"
WORKFLOWS = REPO_ROOT / "example_workflows"
STEPS = int(os.environ.get("LORA_STUDIO_BROWSER_STEPS", "3"))
VIEWPORT = (1600, 1000)

# Page-side helpers, evaluated before each snippet.
PRELUDE = """
const app = window.comfyAPI.app.app;
const api = window.comfyAPI.api.api;
const byType = (t) => app.graph._nodes.filter((n) => n.type === t);
const one = (t) => { const ns = byType(t); if (ns.length !== 1) throw new Error(`${ns.length} nodes of ${t}`); return ns[0]; };
const widget = (n, name) => { const w = n.widgets.find((w) => w.name === name); if (!w) throw new Error(`no widget ${name}`); return w; };
const setWidget = (n, name, value) => { const w = widget(n, name); w.value = value; w.callback?.(w.value); };
"""


# ----------------------------------------------------------------------------------- a tiny CDP client


class CDPError(RuntimeError):
    pass


class Page:
    """One page target of a Chromium started here, driven over the DevTools protocol."""

    def __init__(self, proc: subprocess.Popen, ws_url: str, profile: Path, log_path: Path):
        import websocket  # websocket-client

        self.proc, self.profile, self.log_path = proc, profile, log_path
        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self._id = 0
        self.events: list[dict] = []

    def call(self, method: str, timeout: float = 120, **params):
        self._id += 1
        mid = self._id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"CDP {method}: no answer in {timeout}s")
            self.ws.settimeout(left)
            msg = json.loads(self.ws.recv())
            if msg.get("method") == "Page.javascriptDialogOpening":
                # "Leave site? Changes you made may not be saved." must not block a reload.
                self._id += 1
                self.ws.send(json.dumps({"id": self._id, "method": "Page.handleJavaScriptDialog",
                                         "params": {"accept": True}}))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise CDPError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def js(self, body: str, timeout: float = 120, gesture: bool = False):
        """Run `body` (may `await`, should `return`) in the page with the PRELUDE; the value as JSON."""
        expr = f"(async () => {{ {PRELUDE}\n{body}\n}})()"
        r = self.call("Runtime.evaluate", timeout=timeout, expression=expr, awaitPromise=True, returnByValue=True,
                      userGesture=gesture)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise CDPError(f"page JS failed: {d.get('exception', {}).get('description') or d.get('text')}")
        return r.get("result", {}).get("value")

    def wait_for(self, body: str, timeout: float, what: str, poll: float = 0.5):
        from websocket import WebSocketTimeoutException

        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            # a page too busy to answer in 30 s (a CPU training run on a loaded machine) is asked again; a late
            # answer carries an old id, which call() skips
            with contextlib.suppress(CDPError, TimeoutError, WebSocketTimeoutException):
                last = self.js(body, timeout=30)
                if last:
                    return last
            time.sleep(poll)
        raise TimeoutError(f"waited {timeout}s for {what}; last value {last!r}")

    def screenshot(self, *paths: Path) -> bytes:
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        for p in (p for p in paths if p is not None):
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        return data

    def click(self, x: float, y: float) -> None:
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def console_problems(self) -> list[str]:
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning"):
                out.append(f"console.{p['type']}: " + " ".join(str(a.get("value", a.get("description", "")))
                                                           for a in p.get("args", [])))
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)  # Chromium and its helpers: the group we started
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)


def launch_chromium(log_path: Path) -> Page:
    import requests

    profile = Path(tempfile.mkdtemp(prefix="lora-studio-chrome-"))
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--no-default-browser-check", "--mute-audio",
            f"--user-data-dir={profile}", "--remote-debugging-port=0", "--remote-allow-origins=*",
            f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}", "about:blank"]
    log = open(log_path, "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    log.close()
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while not (port_file.is_file() and port_file.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"Chromium did not start (exit {proc.poll()}):\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    port = int(port_file.read_text().split()[0])
    targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=30).json()
    page = next(t for t in targets if t.get("type") == "page")
    return Page(proc, page["webSocketDebuggerUrl"], profile, log_path)


# ----------------------------------------------------------------------------------- fixtures


NEW_FRONTEND_ENV = "LORA_STUDIO_NEW_FRONTEND"


def each_frontend(request, tmp_path_factory, name: str):
    """The body of a module fixture parametrized ["bundled", "1.58"]: yields (tag, server), the session's server
    for the frontend ComfyUI bundles, or an own server (base folder `name`) started with --front-end-root on the
    newest comfyui-frontend-package's static folder from LORA_STUDIO_NEW_FRONTEND (skipped, saying why, without)."""
    if request.param == "bundled":
        yield "bundled", request.getfixturevalue("comfy_server")
        return
    root = newest_frontend_root(request)
    from tests.e2e.conftest import running_comfy_server

    with running_comfy_server(tmp_path_factory.mktemp(name), ("--front-end-root", root)) as server:
        yield "1.58", server


def newest_frontend_root(request) -> str:
    """LORA_STUDIO_NEW_FRONTEND's static folder; skips, saying why, where it is unset or not a frontend."""
    root = os.environ.get(NEW_FRONTEND_ENV)
    if not root:
        pytest.skip(f"{NEW_FRONTEND_ENV} is not set: point it at the static/ folder of comfyui-frontend-package "
                    "1.58.x (pip download comfyui-frontend-package, unpack) to test the newest frontend")
    if not (Path(root) / "index.html").is_file():
        pytest.skip(f"{NEW_FRONTEND_ENV}={root} has no index.html: not a frontend's static folder")
    request.getfixturevalue("comfy_server")  # skips without COMFYUI_PATH, like every e2e test
    return root


BROWSER_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Locale": "en", "LoraStudio.Language": "en",
                    "Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasInfo": False}


@contextlib.contextmanager
def frontend_page(server: ComfyServer, what: str, checkpoint_file: Path, domains=("Page", "Runtime")):
    """Chromium (1600x1000) for a returning English user of `server`, which has the random SD1.5-shaped
    checkpoint; its console problems go to test-artifacts/browser_console_<what>.txt when it closes."""
    ckpt = server.checkpoints_dir / "sd15_random.safetensors"
    if not ckpt.exists():
        ckpt.symlink_to(checkpoint_file)
    ARTIFACTS.mkdir(exist_ok=True)
    _settings(server, **BROWSER_SETTINGS)
    p = launch_chromium(ARTIFACTS / f"chromium_{what}.log")
    try:
        for domain in domains:
            p.call(f"{domain}.enable")
        p.call("Emulation.setDeviceMetricsOverride", width=1600, height=1000, deviceScaleFactor=1, mobile=False)
        yield p
    finally:
        (ARTIFACTS / f"browser_console_{what}.txt").write_text("\n".join(p.console_problems()) + "\n")
        p.close()


def _settings(server: ComfyServer, **values) -> None:
    r = server.post("/settings", json=values)
    r.raise_for_status()


@pytest.fixture(scope="session")
def chromium(comfyui_path) -> str:
    """Checked before the server starts, so a machine without a browser skips at once. A missing
    ComfyUI is checked first (comfyui_path): it is the reason to name when both are missing."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no Chromium at {CHROMIUM}: install it (Debian: apt-get install -y chromium) or set CHROMIUM")
    try:
        import websocket  # noqa: F401  (websocket-client)
    except ImportError:
        pytest.skip("websocket-client is not installed in this Python: pip install websocket-client")
    return CHROMIUM


@pytest.fixture(scope="module")
def ui(chromium, comfy_server: ComfyServer, sd15_checkpoint):
    """Chromium on ComfyUI's page, the sample dataset in the server's input folder."""
    ARTIFACTS.mkdir(exist_ok=True)
    dst = comfy_server.input_dir / "watercolor_fox"
    if not dst.exists():
        shutil.copytree(REPO_ROOT / "example_data" / "watercolor_fox", dst)
    # A returning user in English (no template browser on first visit, no locale guessing), and a
    # canvas without tabs, minimap and fps counter, for screenshots a README can show.
    _settings(comfy_server, **{"Comfy.TutorialCompleted": True, "Comfy.Locale": "en",
                               "Comfy.Workflow.WorkflowTabsPosition": "Sidebar", "Comfy.Minimap.Visible": False,
                               "Comfy.Graph.CanvasInfo": False})
    page = launch_chromium(ARTIFACTS / "chromium.log")
    try:
        for domain in ("Page", "Runtime"):
            page.call(f"{domain}.enable")
        page.call("Emulation.setFocusEmulationEnabled", enabled=True)  # clipboard needs a focused page
        page.call("Emulation.setDeviceMetricsOverride", width=VIEWPORT[0], height=VIEWPORT[1],
                  deviceScaleFactor=1, mobile=False)
        page.call("Browser.grantPermissions", origin=comfy_server.base_url,
                  permissions=["clipboardReadWrite", "clipboardSanitizedWrite"])
        open_ui(page, comfy_server)
        yield page
    finally:
        (ARTIFACTS / "browser_console.txt").write_text("\n".join(page.console_problems()) + "\n")
        page.close()


def open_ui(page: Page, server: ComfyServer) -> None:
    """The page loaded and its startup done. The app exists before the frontend restores the last workflow
    (1.58 opens the previous tab a moment later, 1.27 loads it after setup): a graph loaded before that is replaced
    by the restored one. The workspace store's `spinner` is on until 1.58's startup ends; 1.27 turns it off after
    setup, and its restore is over once a workflow is active."""
    page.call("Page.navigate", url=server.base_url + "/")
    page.wait_for("""const a = window.comfyAPI?.app?.app, em = a?.extensionManager;
        return !!(a?.graph && a.canvas && LiteGraph.registered_node_types['LoraStudio_TrainLoRA']
                  && em && !em.spinner && (!em.workflow || em.workflow.activeWorkflow))""", 180, "the ComfyUI page")
    page.js("await new Promise((r) => setTimeout(r, 300)); return true;")  # the restored graph's widgets mounted


def load_workflow(page: Page, path: Path) -> None:
    page.js(f"await app.loadGraphData({path.read_text(encoding='utf-8')}, true, true, {json.dumps(path.stem)});"
            "await new Promise((r) => setTimeout(r, 500)); return true;")


def migrated(wf: dict) -> dict:
    """A UI workflow as the frontend shows it: Configure LoRA's 0 / "preset" (older workflows' "keep the preset's
    value") replaced by the preset's values (trainer.presets.preset_widgets)."""
    from trainer.presets import CONFIGURE_WIDGETS, KEEP, get_preset, preset_widgets, widget_kind

    wf = json.loads(json.dumps(wf))
    names = ["ckpt_name", "preset", "name", *CONFIGURE_WIDGETS, "extra"]
    for node in wf.get("nodes", []):
        if node["type"] != "LoraStudio_ConfigureLoRA":
            continue
        values = dict(zip(names, node["widgets_values"]))
        shown = preset_widgets(get_preset(values["preset"]).key)
        for name in CONFIGURE_WIDGETS:
            kind, v = widget_kind(name), values[name]
            if (kind == "number" and v == 0) or (kind in ("switch", "choice") and v == KEEP):
                values[name] = shown[name]
        node["widgets_values"] = [values[n] for n in names]
    return wf


def same_job(ui_prompt: dict, api_prompt: dict) -> bool:
    """The same prompt, where Configure LoRA's 0 / "preset" in one may be the preset's value in the other."""
    from trainer.presets import KEEP, get_preset, preset_widgets

    def norm(prompt):
        out = json.loads(json.dumps(prompt))
        for n in out.values():
            if n.get("class_type") == "LoraStudio_ConfigureLoRA":
                shown = preset_widgets(get_preset(n["inputs"]["preset"]).key)
                for k, v in n["inputs"].items():
                    if k in shown and (v == 0 or v == KEEP) and not isinstance(v, bool):
                        n["inputs"][k] = shown[k]
        return out
    return norm(ui_prompt) == norm(api_prompt)


def ui_checkpoint(page: Page) -> str:
    """A checkpoint the server has (the random SD1.5-shaped one): the live command needs a real one."""
    return page.js("const c = (await (await api.fetchApi('/object_info/LoraStudio_ConfigureLoRA')).json())"
                   ".LoraStudio_ConfigureLoRA.input.required.ckpt_name;"
                   "return Array.isArray(c[0]) ? c[0][0] : c[1].options[0];")


def _workflow_helpers(server: ComfyServer):
    """tools/workflows.py's converter with this server's node definitions (/object_info)."""
    import sys

    sys.path.insert(0, str(REPO_ROOT / "tools"))
    import workflows

    return workflows.specs_of(server.object_info()), workflows.ui_to_api, workflows.strip_meta


# ----------------------------------------------------------------------------------- server-side checks


def test_server_serves_the_extension_the_templates_and_the_locales(comfy_server: ComfyServer):
    exts = comfy_server.get("/extensions").json()
    for js in ("lora_studio.js", "lora_studio_chart.js", "lora_studio_panel.js"):
        assert f"/extensions/lora_studio/{js}" in exts, exts
    served = comfy_server.get("/extensions/lora_studio/presets.json").json()
    assert served == json.loads((REPO_ROOT / "web" / "presets.json").read_text(encoding="utf-8"))
    templates = comfy_server.get("/workflow_templates").json()
    assert sorted(templates.get("lora_studio", [])) == sorted(p.stem for p in WORKFLOWS.glob("*.json")), templates
    assert "train_api" not in templates["lora_studio"], "an API prompt must not be offered as a template"
    served = comfy_server.get("/api/workflow_templates/lora_studio/"
                              + quote("Train a LoRA from a dataset folder.json")).json()
    assert served == json.loads((WORKFLOWS / "Train a LoRA from a dataset folder.json").read_text(encoding="utf-8"))
    i18n = comfy_server.get("/i18n").json()
    for lang in ("en", "de"):
        defs = i18n[lang]["nodeDefs"]
        assert defs["LoraStudio_TrainLoRA"]["display_name"], lang
        assert i18n[lang]["loraStudio"]["command"]["copy"], lang
    assert i18n["de"]["nodeDefs"]["LoraStudio_TrainLoRA"]["display_name"] == "LoRA trainieren (LoRA Studio)"


# ----------------------------------------------------------------------------------- in the browser


@browser
def test_example_workflows_open_unchanged_and_show_our_widgets(ui: Page, comfy_server: ComfyServer):
    reg, ui_to_api, strip_meta = _workflow_helpers(comfy_server)
    for path in sorted(WORKFLOWS.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if "nodes" not in data:
            continue  # API format: not a graph
        load_workflow(ui, path)
        got = ui.js("""
            const saved = app.graph.serialize();
            const p = await app.graphToPrompt();
            return {types: app.graph._nodes.map((n) => n.type),
                    widgets: Object.fromEntries(saved.nodes.map((n) => [n.id, n.widgets_values ?? []])),
                    prompt: p.output,
                    small: app.graph._nodes.filter((n) => n.type.startsWith('LoraStudio_'))
                      .filter((n) => n.size[1] + 1 < n.computeSize()[1] || n.size[0] + 1 < n.computeSize()[0])
                      .map((n) => [n.type, n.size, n.computeSize()])};
        """)
        assert sorted(got["types"]) == sorted(n["type"] for n in data["nodes"]), path.name
        # Configure LoRA's 0 / "preset" of older workflows show as the preset's values; the rest is unchanged
        data = migrated(data)
        for node in data["nodes"]:
            assert got["widgets"][str(node["id"])] == node["widgets_values"], \
                f"{path.name} node {node['id']} ({node['type']}): the frontend reads widgets_values differently"
        assert strip_meta(got["prompt"]) == ui_to_api(data, reg), f"{path.name}: graphToPrompt differs"
        assert not got["small"], f"{path.name}: node sizes smaller than their widgets need: {got['small']}"
        if path.name == "Train a LoRA from a dataset folder.json":
            api = json.loads((WORKFLOWS / "api" / "train_api.json").read_text(encoding="utf-8"))
            assert same_job(strip_meta(got["prompt"]), strip_meta(api)), "api/train_api.json is not what the UI queues"

    load_workflow(ui, WORKFLOWS / "Train a LoRA from a dataset folder.json")
    state = ui.js(f"""
        const train = one('LoraStudio_TrainLoRA'), conf = one('LoraStudio_ConfigureLoRA');
        const panel = conf.loraStudioPanel;
        setWidget(conf, 'ckpt_name', {json.dumps(ui_checkpoint(ui))});
        await conf.loraStudioSettled();
        const before = panel.root.querySelector('.ls-head').textContent;
        setWidget(conf, 'preset', 'Atelier – Detailtreue');
        setWidget(conf, 'rank', 16);
        await conf.loraStudioSettled();
        const after = panel.root.querySelector('.ls-head').textContent;
        const overridden = [...panel.root.querySelectorAll('.ls-value.ls-over')].map((d) => d.title);
        setWidget(conf, 'preset', 'Fotostudio – Schnellstart');
        setWidget(conf, 'rank', 0);  // 0 = the preset's value, shown as that
        await conf.loraStudioSettled();
        const saved = app.graph.serialize().nodes.find((n) => n.id === conf.id).widgets_values;
        return {{chart: Array.isArray(train.lossPoints), canvas: !!train.loraStudioChart?.canvas?.isConnected,
                before, after, overridden, copyDisabled: panel.copyButton.disabled, saved,
                live: conf.loraStudioCommand ?? null, shown: panel.commandArea.value}};
    """)
    assert state["chart"] and state["canvas"], "Train LoRA has no loss chart"
    assert state["before"] == "Fotostudio – Schnellstart" and state["after"] == "Atelier – Detailtreue", state
    assert state["overridden"] == ["rank"], state
    # before any run: the live command, built by the server, with the dataset and the trigger token
    assert not state["copyDisabled"] and state["live"] and state["shown"] == state["live"], state
    assert "--trigger wcfox" in state["live"] and "watercolor_fox" in state["live"], state["live"]
    wf = migrated(json.loads((WORKFLOWS / "Train a LoRA from a dataset folder.json").read_text(encoding="utf-8")))
    want = next(n for n in wf["nodes"] if n["type"] == "LoraStudio_ConfigureLoRA")["widgets_values"]
    want[0] = ui_checkpoint(ui)
    assert state["saved"] == want, "our DOM widgets must not add widgets_values"
    ui.screenshot(ARTIFACTS / "workflow_loaded.png")


@browser
def test_training_run_fills_the_loss_chart_and_copies_the_command(ui: Page, comfy_server: ComfyServer,
                                                                  sd15_checkpoint):
    load_workflow(ui, WORKFLOWS / "Train a LoRA from a dataset folder.json")
    extra = {"test_mode": True, "lr_warmup_steps": 0, "checkpointing_steps": 0}
    name = f"browser_run_{int(time.time())}"
    ui.js(f"""
        const conf = one('LoraStudio_ConfigureLoRA');
        setWidget(conf, 'ckpt_name', {json.dumps(sd15_checkpoint.name)});
        setWidget(conf, 'name', {json.dumps(name)});
        setWidget(conf, 'resolution', 64);
        setWidget(conf, 'max_train_steps', {STEPS});
        setWidget(conf, 'gradient_accumulation_steps', 1);
        setWidget(conf, 'extra', {json.dumps(json.dumps(extra))});
        window.__ls = {{loss: [], done: null}};
        api.addEventListener('lora_studio.loss', (e) => window.__ls.loss.push(e.detail));
        for (const [type, ok] of [['execution_success', true], ['execution_error', false], ['execution_interrupted', false]])
          api.addEventListener(type, (e) => {{ window.__ls.done ??= {{ok, type, detail: e.detail}}; }});
        await app.queuePrompt(0, 1);
        return true;
    """)
    # Mid-run picture once the chart has its first point.
    with contextlib.suppress(TimeoutError):
        ui.wait_for("return one('LoraStudio_TrainLoRA').lossPoints.length > 0 || !!window.__ls.done", 900,
                    "the first loss point")
        ui.screenshot(ARTIFACTS / "training_in_progress.png")
    done = ui.wait_for("return window.__ls.done", 1200, "the run to finish", poll=1.0)
    if not done["ok"]:
        ui.screenshot(ARTIFACTS / "training_failed.png")
        d = done.get("detail") or {}
        pytest.fail(f"the run failed in the server: {done['type']}: node {d.get('node_id')} ({d.get('node_type')}): "
                    f"{d.get('exception_type')}: {d.get('exception_message')}\n" + "".join(d.get("traceback") or [])
                    + "\n" + comfy_server.log_tail())
    time.sleep(1.0)  # let the last websocket messages and a repaint arrive

    run = ui.js("""
        const train = one('LoraStudio_TrainLoRA'), conf = one('LoraStudio_ConfigureLoRA');
        return {points: train.lossPoints.map((p) => [p.step, p.loss]), total: train.lossState.total,
                events: window.__ls.loss.map((d) => [String(d.node), d.step, d.total]), trainId: String(train.id),
                command: conf.loraStudioCommand ?? null, shown: conf.loraStudioPanel.commandArea.value};
    """)
    assert [e[1] for e in run["events"]] == list(range(1, STEPS + 1)), run["events"]
    assert all(e[0] == run["trainId"] and e[2] == STEPS for e in run["events"]), run["events"]
    assert [p[0] for p in run["points"]] == list(range(1, STEPS + 1)) and run["total"] == STEPS, run
    assert all(isinstance(p[1], (int, float)) and p[1] == p[1] for p in run["points"]), run["points"]
    saved = [p.name for p in comfy_server.loras_dir.glob(f"{name}*.safetensors")]
    assert saved, f"no LoRA named {name}* in {comfy_server.loras_dir}"

    ui.screenshot(ARTIFACTS / "training_run.png")
    assert run["command"], ("Configure LoRA's command did not reach the browser: the node must return "
                            "{'ui': {'command': [command]}, 'result': (config, command)} (nodes/configure.py)")
    # after the run: the job's own command (its record), not the live one
    assert " train --job " in run["command"], run["command"]
    assert run["shown"] == run["command"]
    # the README's picture is refreshed only when asked (LORA_STUDIO_UPDATE_SCREENSHOT=1): tests leave the tree clean
    ui.screenshot(ARTIFACTS / "training_run.png", README_SHOT if os.environ.get("LORA_STUDIO_UPDATE_SCREENSHOT") else None)

    # Press "Copy command" like a person would, then read the clipboard.
    rect = ui.js("""
        const b = one('LoraStudio_ConfigureLoRA').loraStudioPanel.copyButton;
        b.scrollIntoView({block: 'center'});
        const r = b.getBoundingClientRect();
        return {x: r.x + r.width / 2, y: r.y + r.height / 2, disabled: b.disabled,
                top: document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2) === b};
    """)
    assert not rect["disabled"] and rect["top"], f"the copy button is not clickable: {rect}"
    ui.click(rect["x"], rect["y"])
    copied = ui.wait_for("return one('LoraStudio_ConfigureLoRA').loraStudioCopied", 10, "the copy to finish")
    assert copied["text"] == run["command"], copied
    clip = ui.js("return await navigator.clipboard.readText();", gesture=True)
    assert clip == run["command"], f"clipboard holds {clip!r} (copied via {copied['how']})"
    status = ui.js("return one('LoraStudio_ConfigureLoRA').loraStudioPanel.statusEl.textContent")
    assert status == "Copied.", status
    ui.screenshot(ARTIFACTS / "command_copied.png")


@browser
def test_german_locale_names_the_nodes_and_the_panel(ui: Page, comfy_server: ComfyServer):
    _settings(comfy_server, **{"Comfy.Locale": "de"})
    try:
        open_ui(ui, comfy_server)
        load_workflow(ui, WORKFLOWS / "Train a LoRA from a dataset folder.json")
        ui.js("await new Promise((r) => setTimeout(r, 500)); return true;")
        got = ui.js("""
            const conf = one('LoraStudio_ConfigureLoRA');
            const train = one('LoraStudio_TrainLoRA');
            return {title: train.title, confTitle: conf.title,
                    input: train.inputs.find((i) => i.name === 'dataset').localized_name,
                    copy: conf.loraStudioPanel.copyButton.textContent,
                    head: conf.loraStudioPanel.root.querySelector('.ls-head').textContent};
        """)
        ui.screenshot(ARTIFACTS / "workflow_de.png")
        assert got["title"] == "LoRA trainieren (LoRA Studio)", got
        assert got["confTitle"] == "LoRA einstellen (LoRA Studio)", got
        assert got["input"] == "Datensatz", got
        assert got["copy"] == "Befehl kopieren", got
        assert got["head"] == "Fotostudio – Schnellstart", "preset titles stay as the guide writes them"
    finally:
        _settings(comfy_server, **{"Comfy.Locale": "en"})


@browser
def test_no_errors_from_our_extension_in_the_console(ui: Page):
    ours = [p for p in ui.console_problems() if "lora_studio" in p.lower() or "lora studio" in p.lower()]
    assert not ours, ours
