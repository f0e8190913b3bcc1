"""The LoRA Studio sidebar in headless Chromium, against the frontend ComfyUI bundles (1.27.x) AND the newest
`comfyui-frontend-package` (1.58.x, started with --front-end-root; its static folder comes from
LORA_STUDIO_NEW_FRONTEND, the parametrization skips where that is unset).

A ZIP of the sample dataset (plus one too-small picture) is uploaded through the sidebar's file input; its
report and the flagged picture's thumbnail show; a training run is queued from it behind a busy queue, and
its row goes queued → running (step, ETA) → finished with a sparkline and a preview; its page shows the
curves, previews, the settings off the preset and the command; "New variant" puts the settings back into a
graph that trains again. Then the same in German through the pack's own language setting.
Screenshots: test-artifacts/; with LORA_STUDIO_UPDATE_SCREENSHOT=1 also docs/screenshots/ for the README.
"""
from __future__ import annotations

import io
import json
import os
import time
import zipfile
from pathlib import Path

import pytest

from tests.e2e.test_browser import ARTIFACTS, _settings, chromium, each_frontend, frontend_page, open_ui  # noqa: F401
from tests.e2e.test_studio_routes import FOX

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "screenshots"
STEPS = 3


def _shots(name: str, tag: str) -> list[Path]:
    out = [ARTIFACTS / f"{tag}_{name}.png"]
    if os.environ.get("LORA_STUDIO_UPDATE_SCREENSHOT") and tag == "bundled":
        out.append(DOCS / f"{name}.png")
    return out


@pytest.fixture(scope="module", params=["bundled", "1.58"])
def studio(request, tmp_path_factory, sd15_checkpoint_file):
    """(tag, server) — the session's server for the bundled frontend, an own one for the newest frontend."""
    yield from each_frontend(request, tmp_path_factory, "comfy_new_frontend")


@pytest.fixture(scope="module")
def page(studio, chromium, sd15_checkpoint_file):  # noqa: F811
    tag, server = studio
    with frontend_page(server, f"studio_{tag}", sd15_checkpoint_file, ("Page", "Runtime", "DOM")) as p:
        open_ui(p, server)
        yield p


def _zip_path(tmp: Path) -> Path:
    """The sample dataset's first 6 pictures and a 96 px one the report flags as too small."""
    from PIL import Image

    lines = (FOX / "metadata.jsonl").read_text().splitlines()[:6]
    tiny = io.BytesIO()
    Image.open(FOX / "images" / json.loads(lines[0])["file"]).resize((96, 96)).save(tiny, "PNG")
    lines.append(json.dumps({"file": "tiny.png", "prompt": "a tiny <my_token> fox"}))
    path = tmp / "class_foxes.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("class_foxes/metadata.jsonl", "\n".join(lines) + "\n")
        for line in lines[:-1]:
            name = json.loads(line)["file"]
            zf.write(FOX / "images" / name, f"class_foxes/images/{name}")
        zf.writestr("class_foxes/images/tiny.png", tiny.getvalue())
    return path


def open_sidebar(p) -> None:
    p.wait_for("""
        const b = document.querySelector('.lora-studio-tab-button, [data-testid="lora-studio-tab-button"]');
        if (b && !document.querySelector('.lora-studio-sidebar')) b.click();
        return !!b;""", 60, "the LoRA Studio button in the sidebar")
    p.wait_for("return !!document.querySelector('.lora-studio-sidebar .ls-jobs, .lora-studio-sidebar .ls-jobpage')",
               30, "the LoRA Studio sidebar")


def set_file_input(p, path: Path) -> None:
    doc = p.call("DOM.getDocument", depth=-1, pierce=True)
    node = p.call("DOM.querySelector", nodeId=doc["root"]["nodeId"], selector=".lora-studio-sidebar .ls-file")
    assert node.get("nodeId"), "no file input in the sidebar"
    p.call("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(path)])


TINY_RUN = {"test_mode": True, "lr_warmup_steps": 0, "checkpointing_steps": 0, "preview_sampling_steps": 2, "snr_gamma": 0}


def tiny_training_js(dataset: str, name: str, ckpt: str = "sd15_random.safetensors", extra: dict | None = None) -> str:
    """Page JS: the training template with a tiny run's settings (64 px, STEPS steps); `conf`, `data` are its nodes."""
    tpl = (REPO / "example_workflows" / "Train a LoRA from a dataset folder.json").read_text(encoding="utf-8")
    return f"""
        await app.loadGraphData({tpl}, true, true, 'studio');
        // as a user would: after the frontend has mounted the graph (1.58 mounts the extra text box a frame or
        // two later and then shows the template's value again)
        for (let i = 0; i < 3; i++) await new Promise((r) => requestAnimationFrame(r));
        await new Promise((r) => setTimeout(r, 200));
        const conf = one('LoraStudio_ConfigureLoRA'), data = one('LoraStudio_LoadDataset');
        setWidget(data, 'dataset', {json.dumps(dataset)});
        setWidget(conf, 'ckpt_name', {json.dumps(ckpt)});
        setWidget(conf, 'name', {json.dumps(name)});
        setWidget(conf, 'resolution', 64);
        setWidget(conf, 'max_train_steps', {STEPS});
        setWidget(conf, 'gradient_accumulation_steps', 1);
        setWidget(conf, 'mixed_precision', 'no');
        setWidget(conf, 'extra', {json.dumps(json.dumps(dict(TINY_RUN, **(extra or {}))))});"""


def queue_training(p, dataset: str, name: str, ckpt: str = "sd15_random.safetensors") -> None:
    p.js(tiny_training_js(dataset, name, ckpt) + """
        await app.queuePrompt(0, 1);
        return true;""")


def rows(p) -> list[dict]:
    """The job table as the user sees it; [] while the page is too busy to answer (a CPU training run)."""
    try:
        return _rows(p)
    except Exception as e:  # noqa: BLE001 — CDP timeouts under load; the loop asks again
        print(f"[rows] {type(e).__name__}: {e}")
        return []


def _rows(p) -> list[dict]:
    return p.js(timeout=60, body="""return [...document.querySelectorAll('.lora-studio-sidebar .ls-job')].map((r) => ({
        id: r.dataset.id, status: r.dataset.status, text: r.querySelector('.ls-status').textContent,
        name: r.querySelector('.ls-job-name').textContent,
        spark: r.querySelectorAll('.ls-spark polyline').length,
        preview: !!r.querySelector('.ls-preview-thumb')?.naturalWidth}));""")


def test_upload_train_watch_and_variant_in_the_sidebar(page, studio, tmp_path, sd15_checkpoint_file):
    tag, server = studio
    p = page
    open_sidebar(p)
    set_file_input(p, _zip_path(tmp_path))
    status = p.wait_for("const s = document.querySelector('.ls-upload-status')?.textContent || '';"
                        "return /Uploaded|HTTP|error/i.test(s) && s", 120, "the upload's answer")
    assert status.startswith("Uploaded as"), status
    dataset = status.split("“", 1)[1].rstrip("”")
    flagged = p.wait_for("""const f = [...document.querySelectorAll('.ls-flag')];
        return f.length && f.every((x) => x.querySelector('img').naturalWidth > 0) &&
          f.map((x) => x.textContent);""", 60, "the flagged pictures' thumbnails")
    assert any("LOW_RESOLUTION" in f and "images/tiny.png" in f for f in flagged), flagged
    assert (server.input_dir / dataset / "images" / "tiny.png").is_file()
    p.wait_for(f"return [...document.querySelectorAll('.ls-ds-name')].some((e) => e.textContent === {json.dumps(dataset)})",
               30, "the dataset in the list")
    p.screenshot(*_shots("sidebar_upload", tag))

    # a busy queue first, so the training waits as "queued"
    from tests.e2e.conftest import Checkpoint

    busy = Checkpoint("sd15_random.safetensors", server.checkpoints_dir / "sd15_random.safetensors",
                      sd15_checkpoint_file).txt2img_prompt(size=64, steps=2)
    server.post("/prompt", json={"prompt": busy, "client_id": "someone-else"}).raise_for_status()
    name = f"studio_{tag.replace('.', '_')}"
    queue_training(p, dataset, name)
    seen, texts, deadline = [], [], time.monotonic() + 1200
    while time.monotonic() < deadline:
        mine = [r for r in rows(p) if r["name"] == name]
        if mine:
            if not seen or seen[-1] != mine[0]["status"]:
                seen.append(mine[0]["status"])
            texts.append(mine[0]["text"])
            if mine[0]["status"] == "running" and "step" in mine[0]["text"] and not (ARTIFACTS / f"{tag}_running.png").exists():
                p.screenshot(ARTIFACTS / f"{tag}_running.png")
            if mine[0]["status"] in ("finished", "failed", "cancelled") and mine[0]["spark"] and mine[0]["preview"]:
                break
        time.sleep(0.4)
    assert seen[:1] == ["queued"] and "running" in seen and seen[-1] == "finished", (seen, server.log_tail())
    assert any("step" in t and "ETA" in t for t in texts), texts
    p.screenshot(*_shots("sidebar_jobs", tag))

    # the job's page
    p.js(f"""[...document.querySelectorAll('.ls-job')].find((r) => r.querySelector('.ls-job-name').textContent ===
             {json.dumps(name)}).click(); return true;""")
    jp = p.wait_for("""const j = document.querySelector('.ls-jobpage');
        return j && j.querySelector('.ls-command')?.value && [...j.querySelectorAll('.ls-preview')].every((i) => i.naturalWidth)
          && {previews: j.querySelectorAll('.ls-preview').length, loss: j.querySelectorAll('.ls-loss-curve polyline').length,
              lr: j.querySelectorAll('.ls-lr-curve polyline').length, command: j.querySelector('.ls-command').value,
              differs: [...j.querySelectorAll('.ls-differs td:first-child')].map((t) => t.textContent),
              report: j.querySelector('.ls-report-text').textContent};""", 60, "the job page")
    assert jp["previews"] >= 1 and jp["loss"] == 1 and jp["lr"] == 1, jp
    assert " train --job " in jp["command"], jp
    assert "resolution" in jp["differs"] and "max_train_steps" in jp["differs"], jp
    assert "images/tiny.png" in jp["report"], jp["report"][:300]  # the run judges it again, at its 64 px
    p.screenshot(*_shots("job_page", tag))

    # New variant: the job's settings back in a graph, which trains again
    # (the graph that queued the run has the same values: its nodes are marked, so only the variant's count)
    p.js("for (const n of app.graph._nodes) n.__lsQueued = true;"
         " document.querySelector('.ls-jobpage .ls-variant').click(); return true;")
    got = p.wait_for("""const c = app.graph._nodes.find((n) => n.type === 'LoraStudio_ConfigureLoRA');
        const d = app.graph._nodes.find((n) => n.type === 'LoraStudio_LoadDataset');
        return c && d && !c.__lsQueued && !d.__lsQueued && Object.fromEntries([...c.widgets, ...d.widgets].filter((w) => w.serialize !== false)
          .map((w) => [w.name, w.value]));""", 30, "the variant graph")
    assert got["dataset"] == dataset and got["name"] == name and got["resolution"] == 64, got
    assert got["max_train_steps"] == STEPS and json.loads(got["extra"])["test_mode"] is True, got
    # A variant changes something (an unchanged graph is ComfyUI's cached result, by design): a new rate.
    # Its run is the first prompt to end that is not in the history yet (the first run's Save LoRA may still
    # be ending on a busy machine when its row already reads "finished").
    known = json.dumps(sorted(server.get("/history").json()))
    sent = p.js("const c = app.graph._nodes.find((n) => n.type === 'LoraStudio_ConfigureLoRA');"
                " const w = c.widgets.find((w) => w.name === 'learning_rate'); w.value = 0.0002; w.callback?.(w.value);"
                f" await c.loraStudioSettled(); const known = new Set({known});"
                " window.__done = null; for (const [t, ok] of [['execution_success', true], ['execution_error', false]])"
                " api.addEventListener(t, (e) => { if (!known.has(e.detail?.prompt_id)) window.__done ??= {ok, d: e.detail}; });"
                " await app.queuePrompt(0, 1); return c.widgets.find((w) => w.name === 'learning_rate').value;")
    assert sent == 0.0002, sent
    done = p.wait_for("return window.__done", 900, "the variant's run", poll=1.0)
    assert done["ok"], (done, server.log_tail())
    records = [json.loads(f.read_text()) for f in (server.output_dir / "lora_studio" / "jobs").glob("*.json")]
    ours = [r for r in records if r["config"]["name"] == name and r["status"] == "finished"]
    assert len(ours) == 2, ([(r["config"]["name"], r["status"]) for r in records], done)
    [a] = [r["config"] for r in ours if abs(r["config"]["learning_rate"] - 2e-4) > 1e-9]  # the first run
    [b] = [r["config"] for r in ours if abs(r["config"]["learning_rate"] - 2e-4) <= 1e-9]  # the variant
    assert {k for k in a if a[k] != b[k]} <= {"resume_from", "learning_rate"}, {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def test_configure_lora_and_sidebar_in_german(page, studio):
    tag, server = studio
    p = page
    _settings(server, **{"LoraStudio.Language": "de"})
    try:
        open_ui(p, server)
        tpl = (REPO / "example_workflows" / "Train a LoRA from a dataset folder.json").read_text(encoding="utf-8")
        p.js("await app.loadGraphData(" + tpl + ", true, true, 'de'); await new Promise((r) => setTimeout(r, 800)); return true;")
        open_sidebar(p)
        got = p.wait_for("""const s = document.querySelector('.lora-studio-sidebar');
            const train = one('LoraStudio_TrainLoRA'), conf = one('LoraStudio_ConfigureLoRA');
            return s && {h3: [...s.querySelectorAll('h3')].map((h) => h.textContent), title: train.title,
                         conf: conf.title, copy: conf.loraStudioPanel.copyButton.textContent,
                         input: train.inputs.find((i) => i.name === 'dataset').label,
                         locale: window.loraStudio.currentLocale()};""", 30, "the German sidebar")
        assert got["locale"] == "de", got
        assert got["h3"][:2] == ["Datensätze", "Aufträge"], got
        assert got["title"] == "LoRA trainieren (LoRA Studio)" and got["conf"] == "LoRA einstellen (LoRA Studio)", got
        assert got["copy"] == "Befehl kopieren" and got["input"] == "Datensatz", got
        p.screenshot(*_shots("sidebar_de", tag))
        toasts = p.js("return [...document.querySelectorAll('.p-toast-message-error')].map((t) => t.textContent)")
        assert not toasts, toasts
    finally:
        _settings(server, **{"LoraStudio.Language": "en"})
        open_ui(p, server)  # the next test starts in English
    ours = [x for x in p.console_problems() if "lora_studio" in x.lower() or "lora studio" in x.lower()]
    assert not ours, ours


# ----------------------------------------------------------------------------------- Configure LoRA and Save LoRA

TRAIN_TEMPLATE = REPO / "example_workflows" / "Train a LoRA from a dataset folder.json"
SAMPLE_TEMPLATE = REPO / "example_workflows" / "Train a LoRA, then sample with it.json"
# Configure LoRA's widgets_values as workflows saved them before the widgets showed the preset's values
OLD_CONFIGURE = ["v1-5-pruned-emaonly.safetensors", "Fotostudio – Schnellstart", "watercolor_fox", 0, 0, 0.0, 0, 0.0,
                 "preset", "preset", 0, 0, "auto", "preset", 42, "", 0, ""]


def old_workflow() -> str:
    wf = json.loads(TRAIN_TEMPLATE.read_text(encoding="utf-8"))
    next(n for n in wf["nodes"] if n["type"] == "LoraStudio_ConfigureLoRA")["widgets_values"] = list(OLD_CONFIGURE)
    return json.dumps(wf)

def _configure_state(p) -> dict:
    return p.js("""const conf = one('LoraStudio_ConfigureLoRA');
        await conf.loraStudioSettled();
        const panel = conf.loraStudioPanel;
        return {values: Object.fromEntries(conf.widgets.filter((w) => w.serialize !== false).map((w) => [w.name, w.value])),
                labels: Object.fromEntries(conf.widgets.filter((w) => w.serialize !== false).map((w) => [w.name, w.label ?? null])),
                marked: conf.loraStudioOverrides, listed: panel.overridesEl.dataset.fields,
                listText: panel.overridesEl.textContent, error: panel.errorEl.textContent,
                shown: panel.commandArea.value, saved: app.graph.serialize().nodes.find((n) => String(n.id) === String(conf.id))?.widgets_values};""")


def _focus_on(p, node_type: str) -> None:
    """The node at the top left at 90 %, the sidebar closed: a README picture of that node."""
    p.js(f"""document.querySelector('.lora-studio-sidebar') && document.querySelector('.lora-studio-tab-button, [data-testid="lora-studio-tab-button"]')?.click();
        const n = one({json.dumps(node_type)});
        app.canvas.ds.scale = 0.9;  // the whole node, its command included, below the frontend's top bar
        app.canvas.ds.offset = [-n.pos[0] + 90, -n.pos[1] + 130];
        app.canvas.setDirty(true, true);
        await new Promise((r) => setTimeout(r, 400)); return true;""")


def test_configure_lora_shows_the_presets_values_and_marks_overrides(page, studio):
    """An older workflow's 0 / "preset" show as the preset's values; a new preset sets them; a changed value is
    marked on its widget and listed in the panel; the live command is the server's, for exactly these values."""
    import requests

    from trainer.presets import preset_widgets

    tag, server = studio
    p = page
    tpl = old_workflow()
    p.js(f"await app.loadGraphData({tpl}, true, true, 'configure'); return true;")
    s = _configure_state(p)
    fotostudio = preset_widgets("fotostudio")
    assert {k: s["values"][k] for k in fotostudio} == fotostudio, s["values"]  # it saved 0 / "preset"
    assert s["saved"][3:6] == [512, 800, 1e-4], s["saved"]  # and saves the values it shows
    assert s["marked"] == [] and s["listed"] == "", s
    assert "v1-5-pruned-emaonly.safetensors" in s["error"] and not s["shown"], s  # no such checkpoint here: said so

    p.js("""const conf = one('LoraStudio_ConfigureLoRA');
        setWidget(conf, 'ckpt_name', 'sd15_random.safetensors');
        setWidget(conf, 'preset', 'Galerie – Feinabstimmung');
        setWidget(conf, 'rank', 16); return true;""")
    s = _configure_state(p)
    galerie = dict(preset_widgets("galerie"), rank=16)
    assert {k: s["values"][k] for k in galerie} == galerie, s["values"]
    assert s["marked"] == ["rank"] and s["listed"] == "rank", s
    assert s["labels"]["rank"].endswith(" *") and not s["labels"]["resolution"].endswith("*"), s["labels"]
    assert "rank 16" in s["listText"] and "32" in s["listText"], s["listText"]
    # the command shown is what the server's builder answers for these values (one builder)
    datas = p.js("return Object.fromEntries(one('LoraStudio_LoadDataset').widgets.map((w) => [w.name, w.value]))")
    r = requests.post(server.url("/lora_studio/command"), json={"widgets": s["values"], "dataset": datas}, timeout=60)
    assert r.status_code == 200 and r.json()["command"] == s["shown"], (r.text, s["shown"])
    assert "--preset galerie" in s["shown"] and "--set rank=16" in s["shown"] and "--trigger wcfox" in s["shown"]
    assert "--set resolution" not in s["shown"], "a value equal to the preset's is no override"
    # a bad request gets its message, not a traceback
    bad = requests.post(server.url("/lora_studio/command"), data="nope", timeout=60)
    assert bad.status_code == 400 and "widgets" in bad.json()["error"], bad.text
    _focus_on(p, "LoraStudio_ConfigureLoRA")
    p.screenshot(*_shots("configure_lora_en", tag))

    _settings(server, **{"LoraStudio.Language": "de"})
    try:
        open_ui(p, server)
        p.js(f"""await app.loadGraphData({tpl}, true, true, 'konfigurieren');
            await new Promise((r) => setTimeout(r, 500));
            const conf = one('LoraStudio_ConfigureLoRA');
            setWidget(conf, 'ckpt_name', 'sd15_random.safetensors');
            setWidget(conf, 'rank', 16); return true;""")
        s = _configure_state(p)
        assert s["values"]["max_train_steps"] == 800 and s["marked"] == ["rank"], s
        de = json.loads((REPO / "locales" / "de" / "nodeDefs.json").read_text(encoding="utf-8"))
        assert s["labels"]["rank"] == de["LoraStudio_ConfigureLoRA"]["inputs"]["rank"]["name"] + " *", s["labels"]
        assert s["listText"].startswith("Vom Preset geändert"), s["listText"]
        _focus_on(p, "LoraStudio_ConfigureLoRA")
        p.screenshot(*_shots("configure_lora_de", tag))
    finally:
        _settings(server, **{"LoraStudio.Language": "en"})
        open_ui(p, server)


def test_save_lora_says_where_and_the_copied_command_runs_the_same_job(page, studio):
    """Save LoRA's "saved …" comes from its output and, when the graph is shown again (another workflow and back,
    a reload), from the job record. The command the panel showed before the run, pasted into a shell in the
    pack's folder, runs the same job: the new job record has the same config."""
    import subprocess
    import sys

    import shutil

    tag, server = studio
    p = page
    if not (server.input_dir / "watercolor_fox").exists():
        shutil.copytree(FOX, server.input_dir / "watercolor_fox")
    name = f"copied_{tag.replace('.', '_')}"
    got = p.js(tiny_training_js("watercolor_fox", name, extra={"preview_prompts": ["1234", "true"]}) + """
        setWidget(data, 'trigger_token', '1234');
        await conf.loraStudioSettled();
        window.__saved = null;
        for (const [t, ok] of [['execution_success', true], ['execution_error', false]])
          api.addEventListener(t, (e) => { window.__saved ??= {ok, d: e.detail}; });
        const shown = {command: conf.loraStudioPanel.commandArea.value, live: conf.loraStudioLive ?? null,
                       job: conf.loraStudioJobCommand ?? null, extra: widget(conf, "extra").value,
                       steps: widget(conf, "max_train_steps").value, res: widget(conf, "resolution").value};
        await app.queuePrompt(0, 1);
        return shown;""")
    shown = got["command"]
    assert shown.startswith("cd ") and "--trigger 1234" in shown and "--dataset" in shown, got
    done = p.wait_for("return window.__saved", 1200, "the run", poll=1.0)
    assert done["ok"], (done, server.log_tail())
    save_text = "return one('LoraStudio_SaveLoRAToModels').loraStudioSaved?.join('\\n') || ''"
    text = p.wait_for(save_text, 30, "Save LoRA's text")
    assert text.startswith(f"saved {name}") and text.endswith(".safetensors"), text
    box = p.js("return document.querySelector('.lora-studio-saved')?.textContent")
    assert box == text, box

    # shown again: another workflow and back (a tab switch loads the graph again), then a reload
    graph = p.js("return JSON.stringify(app.graph.serialize())")
    other = SAMPLE_TEMPLATE.read_text(encoding="utf-8")
    p.js(f"await app.loadGraphData({other}, true, true, 'other'); await app.loadGraphData({graph}, true, true, 'save');"
         " return true;")
    assert p.wait_for(save_text, 30, "Save LoRA's text after switching back") == text
    p.js("await app.loadGraphData(" + graph + ", true, true, 'save'); return true;")  # the workflow the reload restores
    time.sleep(1.5)  # the frontend stores the open workflow shortly after a change
    open_ui(p, server)
    again = p.wait_for("return app.graph._nodes.some((n) => n.type === 'LoraStudio_SaveLoRAToModels') && "
                       + save_text.removeprefix("return "), 60, "Save LoRA's text after a reload")
    assert again == text, again
    p.screenshot(ARTIFACTS / f"{tag}_save_lora.png")

    if tag != "bundled":
        return  # the command is the server's, the same for both frontends: pasted and run once
    jobs = server.output_dir / "lora_studio" / "jobs"
    original = next(json.loads(f.read_text()) for f in jobs.glob("*.json")
                    if json.loads(f.read_text())["config"]["name"] == name)
    before = {f.name for f in jobs.glob("*.json")}
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    run = subprocess.run(["nice", "-n", "10", "bash", "-c", shown], cwd=server.pack_dir, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, (shown, run.stdout[-3000:], run.stderr[-3000:])
    new = [json.loads(f.read_text()) for f in jobs.glob("*.json") if f.name not in before]
    assert len(new) == 1, [r["config"]["name"] for r in new]
    a, b = original["config"], new[0]["config"]
    # resume_from: Train LoRA's "resume: auto" is how that run started, not the job
    diff = {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if k != "resume_from" and a.get(k) != b.get(k)}
    assert diff == {}, (shown, diff)
    assert b["trigger_token"] == "1234" and b["preview_prompts"] == ["1234", "true"], b
    assert new[0]["status"] == "finished", new[0].get("message")
