"""The LoRA Studio routes on ComfyUI's server (aiohttp): thin handlers over trainer/studio.

    GET    /lora_studio/jobs                      job summaries, newest first (the viewer's own; operators: all)
    GET    /lora_studio/jobs/{id}                 a job's page: record, summary, previews, settings off the preset
    POST   /lora_studio/jobs/{id}/cancel          cancel one's own running or queued job
    GET    /lora_studio/jobs/{id}/preview/{file}  a preview picture;  .../bias_grid · .../lora · .../record
    GET    /lora_studio/datasets                  datasets in the input folder with their report status
    POST   /lora_studio/datasets                  multipart upload (a .zip, or pictures + .txt); ?name= optional
    GET    /lora_studio/datasets/{name}           an uploaded dataset's report and flagged pictures
    GET    /lora_studio/datasets/{name}/thumb?file=  a thumbnail of one of its pictures
    DELETE /lora_studio/datasets/{name}           delete one's own upload
    POST   /lora_studio/command                   Configure LoRA's command for {"widgets": {…}, "dataset": {…}}

Every refusal is JSON {"error": message} with a 4xx status; no traceback reaches the browser. ComfyUI also
serves each route under /api (the frontend's api.fetchApi uses that prefix).
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path

from ..trainer.errors import LoraStudioError
from ..trainer.studio import DatasetStore, JobStore, StudioError, Viewer
from ..trainer.studio.jobs import job_file, job_page
from . import comfy_bridge as bridge
from .variant import variant

log = logging.getLogger("lora_studio.routes")

TRAIN_NODE, CONFIGURE_NODE, DATASET_NODE = "LoraStudio_TrainLoRA", "LoraStudio_ConfigureLoRA", "LoraStudio_LoadDataset"
CHUNK = 1 << 20
THUMB_PX = 192


def _json(data, status: int = 200):
    from aiohttp import web

    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))


def _error(status: int, message: str):
    return _json({"error": message}, status)


def _viewer(request) -> Viewer:
    srv = bridge.prompt_server()
    try:
        user = srv.user_manager.get_request_user_id(request)
    except KeyError:
        raise StudioError(401, "Unknown ComfyUI user. Fix: log in again (pick your user in ComfyUI's user "
                               "dialog).") from None
    except AttributeError:
        user = "default"
    users = getattr(getattr(srv, "user_manager", None), "users", None) or {}
    return Viewer.of(user, users.get(user))  # {id: name}: the operator setting may name users


def jobs() -> JobStore:
    return JobStore(bridge.studio_dir("jobs"))


def datasets() -> DatasetStore:
    fp = bridge.folder_paths()
    temp = Path(fp.get_temp_directory()) if fp else None
    return DatasetStore(bridge.input_dir(), bridge.studio_dir("uploads"), temp)


def _handler(fn):
    """Our errors as JSON with their status; anything unexpected is logged and answered without a traceback."""
    async def wrapped(request):
        try:
            return await fn(request)
        except StudioError as e:
            return _error(e.status, str(e))
        except LoraStudioError as e:
            return _error(400, str(e))
        except Exception:  # noqa: BLE001 — the browser gets a sentence, the log the traceback
            log.exception("LoRA Studio route %s %s failed", request.method, request.path)
            return _error(500, "LoRA Studio hit an internal error; it is in the server's log. Fix: try again, and "
                               "tell the server's operator if it stays.")
    return wrapped


# --------------------------------------------------------------------------- ComfyUI's queue, read-only

def _queue_entries() -> tuple[list[dict], set[str]]:
    """Prompts in ComfyUI's queue that train a LoRA (pending, or running but without a record yet)."""
    srv = bridge.prompt_server()
    try:
        running, pending = srv.prompt_queue.get_current_queue_volatile()
    except AttributeError:
        return [], set()
    out, running_ids = [], set()
    for started, items in ((True, running), (False, pending)):
        for item in items:
            prompt_id, prompt = item[1], item[2]
            if started:
                running_ids.add(prompt_id)
            nodes = [n for n in prompt.values() if isinstance(n, dict)]
            if not any(n.get("class_type") == TRAIN_NODE for n in nodes):
                continue
            conf = next((n.get("inputs") or {} for n in nodes if n.get("class_type") == CONFIGURE_NODE), {})
            data = next((n.get("inputs") or {} for n in nodes if n.get("class_type") == DATASET_NODE), {})
            owner = bridge.prompt_owner(prompt_id)
            out.append({"prompt_id": prompt_id, "running": started, "user": owner.get("user") or "default",
                        "created": owner.get("created"), "name": conf.get("name"), "preset": conf.get("preset"),
                        "base_model": conf.get("ckpt_name"), "dataset": data.get("dataset"),
                        "steps": conf.get("max_train_steps") or None})
    return out, running_ids


# --------------------------------------------------------------------------- jobs

@_handler
async def list_jobs(request):
    queued, running = _queue_entries()
    return _json({"jobs": jobs().summaries(_viewer(request), bridge.LIVE, queued, running),
                  "user": _viewer(request).user, "operator": _viewer(request).operator})


@_handler
async def get_job(request):
    job_id = request.match_info["id"]
    viewer = _viewer(request)
    for q in _queue_entries()[0]:  # not started yet: no record, but a page
        if q["prompt_id"] == job_id and viewer.may_see(q["user"]):
            from ..trainer.studio.jobs import queued_summary

            return _json({"record": None, "summary": queued_summary(q, bridge.LIVE.get(job_id)), "previews": [],
                          "bias_grid": False, "differs": {}, "live": bridge.LIVE.get(job_id)})
    rec = jobs().record(job_id, viewer)
    page = job_page(rec, bridge.LIVE.get(str(rec.get("prompt_id"))))
    fp = bridge.folder_paths()
    page["variant"] = variant(rec, bridge.input_dir(), bridge.checkpoint_names(),
                              (lambda n: fp.get_full_path("checkpoints", n)) if fp else (lambda n: None))
    return _json(page)


@_handler
async def cancel_job(request):
    job_id = request.match_info["id"]
    viewer = _viewer(request)
    queued, running = _queue_entries()
    entry = next((q for q in queued if q["prompt_id"] == job_id), None)
    if entry is None:
        rec = jobs().record(job_id, viewer)
        prompt_id, owner = rec.get("prompt_id"), rec.get("user") or "default"
        if rec.get("status") != "running" or prompt_id not in running:
            raise StudioError(409, f"Job '{job_id}' is not running (it is {rec.get('status')}). Nothing to cancel.")
    else:
        prompt_id, owner = entry["prompt_id"], entry["user"]
    if not viewer.may_act(owner):
        raise StudioError(403, f"Job '{job_id}' belongs to another user; only they can cancel it.")
    srv = bridge.prompt_server()
    if prompt_id in running:
        import comfy.model_management as mm

        mm.interrupt_current_processing()  # what POST /interrupt does: Train LoRA checkpoints and stops in one step
        return _json({"cancelled": job_id, "how": "interrupted"})
    srv.prompt_queue.delete_queue_item(lambda item: item[1] == prompt_id)
    return _json({"cancelled": job_id, "how": "removed from the queue"})


@_handler
async def job_download(request):
    job_id, kind = request.match_info["id"], request.match_info["kind"]
    rec = jobs().record(job_id, _viewer(request))
    from aiohttp import web

    if kind == "record":
        return web.Response(body=json.dumps(rec, indent=2, default=str).encode(), content_type="application/json",
                            headers={"Content-Disposition": f'attachment; filename="{job_id}.json"'})
    path = job_file(rec, kind, request.match_info.get("file", ""))
    headers = {"Content-Disposition": f'attachment; filename="{path.name}"'} if kind == "lora" else {}
    return web.FileResponse(path, headers=headers)


# --------------------------------------------------------------------------- datasets

@_handler
async def list_datasets(request):
    return _json({"datasets": datasets().list(_viewer(request))})


@_handler
async def upload_dataset(request):
    viewer = _viewer(request)
    if not (request.content_type or "").startswith("multipart/"):
        raise StudioError(415, "Send the dataset as multipart/form-data (a file field). Fix: use the LoRA Studio "
                               "sidebar, or curl -F file=@my_dataset.zip.")
    store = datasets()
    upload = store.begin(viewer.user, request.query.get("name", "").strip(), request.content_length)
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not part.filename:
                continue  # form fields: the name comes as ?name=
            upload.add_file(part.filename)
            while chunk := await part.read_chunk(CHUNK):  # streamed to disk as it arrives
                upload.write(chunk)
        entry = await asyncio.get_running_loop().run_in_executor(None, upload.finish)
    finally:
        upload.abort()
    return _json(entry, 201)


@_handler
async def dataset_info(request):
    return _json(datasets().info(request.match_info["name"]))


@_handler
async def dataset_thumb(request):
    from aiohttp import web

    path = datasets().picture(request.match_info["name"], request.query.get("file", ""))

    def thumb() -> bytes:
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.thumbnail((THUMB_PX, THUMB_PX))
                buf = io.BytesIO()
                im.convert("RGB").save(buf, "JPEG", quality=85)
                return buf.getvalue()
        except Exception:  # an unreadable picture is exactly what the report flags: a grey square then
            buf = io.BytesIO()
            Image.new("RGB", (THUMB_PX, THUMB_PX), (128, 128, 128)).save(buf, "JPEG")
            return buf.getvalue()

    body = await asyncio.get_running_loop().run_in_executor(None, thumb)
    return web.Response(body=body, content_type="image/jpeg")


@_handler
async def delete_dataset(request):
    datasets().delete(request.match_info["name"], _viewer(request))
    return _json({"deleted": request.match_info["name"]})


# --------------------------------------------------------------------------- the live command

@_handler
async def live_command(request):
    """Configure LoRA's command for the widget values the browser sends, built by the server's one builder."""
    from .configure import live_command as build

    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("widgets"), dict) \
            or not isinstance(body.get("dataset") or {}, dict):
        raise StudioError(400, 'Send JSON {"widgets": {Configure LoRA\'s values}, "dataset": {Load Dataset\'s '
                               'values}}. Fix: see the README\'s routes section.')
    widgets = {k: v for k, v in body["widgets"].items() if isinstance(k, str)}
    if "ckpt_name" not in widgets or "preset" not in widgets:
        raise StudioError(400, "widgets needs ckpt_name and preset. Fix: send every Configure LoRA widget value.")
    result = await asyncio.get_running_loop().run_in_executor(None, build, widgets, body.get("dataset") or {})
    return _json(result)


# --------------------------------------------------------------------------- registration

def _remember_prompt_users():
    from aiohttp import web

    @web.middleware
    async def middleware(request, handler):
        response = await handler(request)
        if request.method == "POST" and request.path in ("/prompt", "/api/prompt") and response.status == 200:
            try:
                prompt_id = json.loads(response.text)["prompt_id"]
                bridge.remember_prompt(prompt_id, _viewer(request).user)
            except Exception:  # noqa: BLE001 — never in the way of queueing
                log.debug("could not note the user of a prompt", exc_info=True)
        return response

    return middleware


def register() -> bool:
    """Add the routes and the prompt-owner middleware to ComfyUI's server; False outside ComfyUI."""
    srv = bridge.prompt_server()
    if srv is None or not hasattr(srv, "routes"):
        return False
    r = srv.routes
    r.get("/lora_studio/jobs")(list_jobs)
    r.get("/lora_studio/jobs/{id}")(get_job)
    r.post("/lora_studio/jobs/{id}/cancel")(cancel_job)
    r.get("/lora_studio/jobs/{id}/{kind:preview}/{file}")(job_download)
    r.get("/lora_studio/jobs/{id}/{kind:bias_grid|lora|record}")(job_download)
    r.post("/lora_studio/command")(live_command)
    r.get("/lora_studio/datasets")(list_datasets)
    r.post("/lora_studio/datasets")(upload_dataset)
    r.get("/lora_studio/datasets/{name}")(dataset_info)
    r.get("/lora_studio/datasets/{name}/thumb")(dataset_thumb)
    r.delete("/lora_studio/datasets/{name}")(delete_dataset)
    try:
        srv.app.middlewares.append(_remember_prompt_users())
    except (AttributeError, RuntimeError):  # a started app: jobs then carry the user "default"
        log.warning("LoRA Studio could not add its middleware; job records will not name their users")
    return True
