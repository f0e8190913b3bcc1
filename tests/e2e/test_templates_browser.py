"""The example workflows as templates, opened the way a user opens them: Browse Templates → the LoRA Studio
category → a card, in headless Chromium against the frontend ComfyUI 0.3.64 bundles (1.27.x) AND the newest
`comfyui-frontend-package` (1.58.x, started with --front-end-root from LORA_STUDIO_NEW_FRONTEND; skipped,
saying so, where that is unset).

Each card shows its title and its own thumbnail; opening it raises no error toast, no missing-model warning
(1.58 marked Configure LoRA red and warned on Run while the template named a checkpoint the server lacked) and
no node error; the note says to pick a checkpoint, and Run answers the empty one with the node's "pick" message.
With LORA_STUDIO_UPDATE_SCREENSHOT=1 the bundled run also writes the thumbnails (a picture of each graph).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.e2e.test_browser import ARTIFACTS, chromium, each_frontend, frontend_page, open_ui  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import workflows as wfs  # noqa: E402  (tools/workflows.py)

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
PACK = "lora_studio"  # the folder name tests/e2e/conftest.py links the pack in as
# Where each thumbnail looks at its graph: canvas scale, offset, and the width of the 16:10 crop (screen px).
THUMB_VIEWS = {wfs.FROM_FOLDER: (0.7, (-11.4, -12.9), 1000), wfs.TRAIN_AND_SAMPLE: (0.62, (-483.9, -13.9), 1040)}


def _title(name: str) -> str:
    return name.removesuffix(".json")


@pytest.fixture(scope="module", params=["bundled", "1.58"])
def server(request, tmp_path_factory, sd15_checkpoint_file):
    """(tag, server): the session's server for the bundled frontend, an own one for the newest frontend."""
    yield from each_frontend(request, tmp_path_factory, "comfy_templates_new")


@pytest.fixture(scope="module")
def page(server, chromium, sd15_checkpoint_file):  # noqa: F811
    tag, s = server  # a user who has a checkpoint, just not one a template could name
    with frontend_page(s, f"templates_{tag}", sd15_checkpoint_file) as p:
        yield p


def test_templates_are_listed_and_served_with_their_own_thumbnails(comfy_server):
    from PIL import Image

    listed = comfy_server.get("/workflow_templates").json().get(PACK, [])
    assert sorted(listed) == sorted(_title(n) for n in wfs.TEMPLATES), listed
    digests = set()
    for name in wfs.TEMPLATES:
        base = f"/api/workflow_templates/{PACK}/{quote(_title(name))}"
        r = comfy_server.get(base + ".json")
        assert r.status_code == 200 and r.json() == json.loads((wfs.WORKFLOWS / name).read_text(encoding="utf-8"))
        r = comfy_server.get(base + ".jpg")
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg", (name, r.status_code, r.headers)
        with Image.open(io.BytesIO(r.content)) as im:
            im.load()
            assert im.format == "JPEG" and min(im.size) >= 256, (name, im.size)
        digests.add(hashlib.sha256(r.content).hexdigest())
    assert len(digests) == len(wfs.TEMPLATES), "the templates share a thumbnail"


def _open_category(p) -> list[dict]:
    """Browse Templates, then our category; the cards as the user sees them."""
    p.js("await app.extensionManager.command.execute('Comfy.BrowseTemplates'); return true;")
    p.wait_for("""const d = document.querySelector('[role=dialog]');
        const nav = d && [...d.querySelectorAll('*')].find((e) => e.children.length === 0 && e.textContent.trim() === 'LoRA Studio');
        if (nav) nav.click();
        return !!nav;""", 60, "the LoRA Studio category in the template browser (its title from locales/*/main.json)")
    return p.wait_for(f"""const names = {json.dumps([_title(n) for n in wfs.TEMPLATES])};
        const cards = names.map((n) => document.querySelector(`[data-testid="template-workflow-${{n}}"]`));
        if (cards.some((c) => !c)) return null;
        const out = cards.map((c, i) => {{ const img = c.querySelector('img');
            return {{name: names[i], text: c.innerText, loaded: !!img && img.complete && img.naturalWidth > 0,
                    alt: img?.alt ?? null}}; }});
        return out.every((c) => c.loaded) ? out : null;""", 60, "both cards with their thumbnails loaded")


def _problems_after_opening(p, name: str) -> dict:
    p.wait_for("return app.graph._nodes.some((n) => n.type === 'LoraStudio_TrainLoRA')", 60, f"{name} to open")
    p.js("await new Promise((r) => setTimeout(r, 3000)); return true;")  # the 1.58 missing-model scan is async
    return p.js("""
        const text = document.body.innerText;
        return {toasts: [...document.querySelectorAll('.p-toast-message-error, .p-toast-message-warn')].map((t) => t.innerText),
                dialogs: [...document.querySelectorAll('[role=dialog]')].map((d) => d.innerText.slice(0, 300)),
                missing: /is missing|missing a required model|Missing Models/i.test(text),
                errors: app.graph._nodes.filter((n) => n.has_errors).map((n) => n.type),
                types: app.graph._nodes.map((n) => n.type),
                note: app.graph._nodes.find((n) => n.type === 'Note')?.widgets?.[0]?.value ?? '',
                ckpt: app.graph._nodes.filter((n) => n.widgets?.some((w) => w.name === 'ckpt_name'))
                        .map((n) => n.widgets.find((w) => w.name === 'ckpt_name').value)};""")


def _thumbnail(p, name: str) -> None:
    """Write <name>.jpg: the graph as it opens, at a scale where the nodes are readable."""
    from PIL import Image

    scale, offset, width = THUMB_VIEWS[name]
    rect = p.js(f"""app.canvas.ds.scale = {scale}; app.canvas.ds.offset = {json.dumps(list(offset))};
        app.canvas.setDirty(true, true); await new Promise((r) => setTimeout(r, 800));
        const r = app.canvas.canvas.getBoundingClientRect(); return [r.x, r.y];""")
    shot = Image.open(io.BytesIO(p.screenshot())).convert("RGB")
    box = (int(rect[0]), int(rect[1]), int(rect[0]) + width, int(rect[1]) + int(width * 0.625))
    shot.crop(box).resize((640, 400), Image.LANCZOS).save((wfs.WORKFLOWS / name).with_suffix(".jpg"),
                                                         quality=88, optimize=True)


@pytest.mark.parametrize("name", wfs.TEMPLATES)
def test_a_template_opens_from_the_template_browser_without_errors(page, server, name):
    tag, s = server
    open_ui(page, s)
    cards = _open_category(page)
    for card in cards:
        assert card["name"] in card["text"] and card["alt"] == card["name"], card  # the human title, on the card
    page.js(f"document.querySelector('[data-testid=\"template-workflow-{_title(name)}\"]').click(); return true;")
    got = _problems_after_opening(page, name)
    page.screenshot(ARTIFACTS / f"template_{tag}_{_title(name).replace(' ', '_').replace(',', '')}.png")
    want_types = sorted(n["type"] for n in json.loads((wfs.WORKFLOWS / name).read_text(encoding="utf-8"))["nodes"])
    assert sorted(got["types"]) == want_types, got["types"]
    assert got["toasts"] == [] and got["dialogs"] == [], got
    assert not got["missing"] and got["errors"] == [], f"a missing-model warning or a red node: {got}"
    assert got["ckpt"] and set(got["ckpt"]) == {""}, got["ckpt"]
    assert "pick your checkpoint" in got["note"], got["note"]
    if tag == "bundled" and os.environ.get("LORA_STUDIO_UPDATE_SCREENSHOT"):
        _thumbnail(page, name)
    # Run as it is: refused before anything is queued, with Configure LoRA's own "pick" message.
    page.js("await app.queuePrompt(0, 1); return true;")
    # 1.27 shows it in its error dialog; 1.58 in "View details" of its "Invalid input" banner (app.lastNodeErrors)
    page.wait_for("return /pick your base model/.test(document.body.innerText + JSON.stringify(app.lastNodeErrors ?? null))",
                  60, "the 'pick your base model' message after Run")
