"""End-to-end fixtures: a real ComfyUI server with this pack installed, and an SD1.5-shaped checkpoint.

Environment:
  COMFYUI_PATH            ComfyUI source tree (with main.py). Unset -> every e2e test is skipped.
  COMFYUI_PYTHON          Python that runs the server (default: the one running pytest). It needs
                          ComfyUI's requirements plus this pack's dependencies.
  COMFYUI_START_TIMEOUT   seconds to wait for the server to answer /object_info (default 240).
  COMFYUI_EXTRA_ARGS      extra command-line arguments for main.py (shell syntax).
  LORA_STUDIO_TEST_CACHE  where built test checkpoints are cached (default ~/.cache/lora_studio_tests).

The server gets its own temporary --base-directory (models, custom_nodes, input, output, temp, user) and
database, so nothing is written into the ComfyUI tree; the pack is symlinked in as
<base>/custom_nodes/lora_studio.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

PACK_NAME = "lora_studio"
SD15_CKPT_NAME = "sd15_random.safetensors"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "e2e: end-to-end test against a real ComfyUI server (needs COMFYUI_PATH; slow)"
    )


# ----------------------------------------------------------------------------------- helpers


class PromptError(RuntimeError):
    """POST /prompt was rejected (validation). ``.response`` holds the server's JSON."""

    def __init__(self, status: int, response: Any):
        self.status = status
        self.response = response
        super().__init__(f"/prompt rejected ({status}): {json.dumps(response, indent=1)[:4000]}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cache_dir() -> Path:
    d = Path(os.environ.get("LORA_STUDIO_TEST_CACHE") or Path.home() / ".cache" / "lora_studio_tests")
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextlib.contextmanager
def _file_lock(path: Path):
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class ComfyServer:
    """A running ComfyUI. Paths are the server's own folders (inside its temporary base directory)."""

    base_url: str  # http://127.0.0.1:<port>
    port: int
    process: subprocess.Popen
    comfyui_path: Path
    base_dir: Path
    models_dir: Path
    checkpoints_dir: Path
    loras_dir: Path
    input_dir: Path
    output_dir: Path
    temp_dir: Path
    user_dir: Path
    custom_nodes_dir: Path
    pack_dir: Path  # <custom_nodes>/lora_studio, a symlink to the repo root
    log_path: Path  # the server's stdout+stderr
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    ws_messages: list = field(default_factory=list)  # every JSON websocket message, as dicts, in order
    ws_binary: list = field(default_factory=list)  # binary websocket frames (preview images), as bytes
    start_seconds: float = 0.0  # how long the server took to answer /object_info
    _ws_app: Any = None
    _ws_thread: Any = None

    # --- HTTP -------------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def get(self, path: str, **kw):
        import requests

        kw.setdefault("timeout", 60)
        return requests.get(self.url(path), **kw)

    def post(self, path: str, **kw):
        import requests

        kw.setdefault("timeout", 60)
        return requests.post(self.url(path), **kw)

    def object_info(self, node_class: str | None = None) -> dict:
        r = self.get("/object_info" + (f"/{node_class}" if node_class else ""))
        r.raise_for_status()
        info = r.json()
        return info[node_class] if node_class else info

    def post_prompt(self, prompt: dict, extra_data: dict | None = None) -> str:
        """Queue an API-format prompt; returns its prompt_id. Raises PromptError if validation fails."""
        body = {"prompt": prompt, "client_id": self.client_id}
        if extra_data:
            body["extra_data"] = extra_data
        r = self.post("/prompt", json=body)
        try:
            data = r.json()
        except ValueError:
            data = r.text
        if r.status_code != 200 or (isinstance(data, dict) and data.get("node_errors")):
            raise PromptError(r.status_code, data)
        return data["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        r = self.get(f"/history/{prompt_id}")
        r.raise_for_status()
        return r.json().get(prompt_id)

    def wait(self, prompt_id: str, timeout: float = 300, poll: float = 0.25) -> dict:
        """Block until the prompt finished (success or error) and return its /history entry.

        The entry has ``status`` (``status_str`` 'success'/'error', ``completed``, ``messages``) and
        ``outputs`` (per node id, e.g. ``{"images": [...]}``). Raises TimeoutError or RuntimeError if the
        server died, both with the end of the server log.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}\n{self.log_tail()}")
            entry = self.history(prompt_id)
            if entry is not None and entry.get("status", {}).get("status_str") in ("success", "error"):
                return entry
            if time.monotonic() > deadline:
                raise TimeoutError(f"prompt {prompt_id} not finished after {timeout}s\n{self.log_tail()}")
            time.sleep(poll)

    def run(self, prompt: dict, timeout: float = 300) -> dict:
        """post_prompt + wait, and assert that it succeeded (the error and log tail in the message)."""
        entry = self.wait(self.post_prompt(prompt), timeout)
        assert_success(entry, self)
        return entry

    def assert_success(self, entry: dict) -> None:
        assert_success(entry, self)

    def interrupt(self) -> None:
        self.post("/interrupt").raise_for_status()

    def queue(self) -> dict:
        return self.get("/queue").json()

    # --- websocket --------------------------------------------------------------------------
    def messages(self, type: str | None = None, prompt_id: str | None = None) -> list[dict]:
        """Websocket messages so far, optionally only of one ``type`` and/or one prompt."""
        out = []
        for m in list(self.ws_messages):
            if type is not None and m.get("type") != type:
                continue
            if prompt_id is not None and (m.get("data") or {}).get("prompt_id") != prompt_id:
                continue
            out.append(m)
        return out

    def clear_messages(self) -> None:
        self.ws_messages.clear()
        self.ws_binary.clear()

    # --- log --------------------------------------------------------------------------------
    def log_mark(self) -> int:
        """Current end of the log; pass to log_text(since=...) to read only what came after."""
        return self.log_path.stat().st_size

    def log_text(self, since: int = 0) -> str:
        with open(self.log_path, "rb") as fh:
            fh.seek(since)
            return fh.read().decode("utf-8", "replace")

    def log_tail(self, n: int = 80) -> str:
        return "----- ComfyUI log tail -----\n" + "\n".join(self.log_text().splitlines()[-n:])

    def import_failures(self) -> list[str]:
        """Custom node modules ComfyUI failed to import (from its 'Import times' report)."""
        return [line.split(":", 1)[1].strip() for line in self.log_text().splitlines()
                if "(IMPORT FAILED):" in line]

    # --- lifecycle --------------------------------------------------------------------------
    def _start_ws(self) -> None:
        import websocket  # websocket-client

        def on_message(_ws, msg):
            if isinstance(msg, bytes):
                self.ws_binary.append(msg)
            else:
                try:
                    self.ws_messages.append(json.loads(msg))
                except ValueError:
                    self.ws_messages.append({"type": "<unparsed>", "data": msg})

        connected = threading.Event()
        self._ws_app = websocket.WebSocketApp(
            f"ws://127.0.0.1:{self.port}/ws?clientId={self.client_id}",
            on_message=on_message,
            on_open=lambda _ws: connected.set(),
        )
        self._ws_thread = threading.Thread(target=self._ws_app.run_forever, name="comfy-ws", daemon=True)
        self._ws_thread.start()
        if not connected.wait(30):
            raise RuntimeError("websocket to ComfyUI did not connect")

    def stop(self) -> None:
        if self._ws_app is not None:
            with contextlib.suppress(Exception):
                self._ws_app.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self._ws_thread is not None:
            self._ws_thread.join(5)


def assert_success(entry: dict, server: ComfyServer | None = None) -> None:
    """Fail with ComfyUI's own error (exception, node, traceback) unless a history entry succeeded."""
    status = entry.get("status", {})
    if status.get("status_str") == "success":
        return
    details = []
    for kind, data in status.get("messages", []):
        if kind in ("execution_error", "execution_interrupted"):
            details.append(f"{kind}: node {data.get('node_id')} ({data.get('node_type')}): "
                           f"{data.get('exception_type')}: {data.get('exception_message')}\n"
                           + "".join(data.get("traceback") or []))
    msg = f"prompt failed: {status.get('status_str')}\n" + "\n".join(details)
    if server is not None:
        msg += "\n" + server.log_tail()
    raise AssertionError(msg)


def _comfyui_path() -> Path:
    raw = os.environ.get("COMFYUI_PATH")
    if not raw:
        pytest.skip("COMFYUI_PATH is not set: end-to-end tests need a ComfyUI source tree (see README)")
    path = Path(raw).expanduser().resolve()
    if not (path / "main.py").is_file():
        pytest.skip(f"COMFYUI_PATH={raw} has no main.py: not a ComfyUI tree")
    return path


# ----------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def comfyui_path() -> Path:
    """The ComfyUI tree named by COMFYUI_PATH; skips every test that needs it, saying why, when unset."""
    return _comfyui_path()


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory) -> ComfyServer:
    """Start ComfyUI once per session (CPU, loopback, free port) with this pack in custom_nodes."""
    with running_comfy_server(tmp_path_factory.mktemp("comfy_base")) as server:
        yield server


@contextlib.contextmanager
def running_comfy_server(base: Path, extra_args: tuple[str, ...] = (), env_extra: dict | None = None):
    """A ComfyUI in its own base directory, stopped on exit (for tests that need other flags, e.g.
    --multi-user or --front-end-root). The log is <base>/comfyui.log."""
    comfy = _comfyui_path()
    python = os.environ.get("COMFYUI_PYTHON") or sys.executable
    models = base / "models"
    for sub in ("checkpoints", "loras", "vae", "embeddings", "text_encoders", "diffusion_models"):
        (models / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("custom_nodes", "input", "output", "temp", "user"):
        (base / sub).mkdir(exist_ok=True)
    pack = base / "custom_nodes" / PACK_NAME
    pack.symlink_to(REPO_ROOT, target_is_directory=True)

    port = _free_port()
    log_path = base / "comfyui.log"
    cmd = [
        python, "main.py",
        "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
        "--base-directory", str(base),
        "--database-url", f"sqlite:///{base / 'comfyui.db'}",
        "--disable-api-nodes",
        "--verbose", "DEBUG",  # so 'left over keys' / 'clip unexpected' reach the log
    ]
    cmd += shlex.split(os.environ.get("COMFYUI_EXTRA_ARGS", "")) + list(extra_args)
    # uploads above 8 MiB are refused in tests, so the limit can be tested without gigabytes
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               DO_NOT_TRACK="1", LORA_STUDIO_MAX_UPLOAD_BYTES=os.environ.get("LORA_STUDIO_MAX_UPLOAD_BYTES",
                                                                               str(8 << 20)), **(env_extra or {}))
    log_fh = open(log_path, "wb")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=comfy, stdout=log_fh, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env)
    log_fh.close()  # the child holds its own descriptor
    server = ComfyServer(
        base_url=f"http://127.0.0.1:{port}", port=port, process=proc, comfyui_path=comfy,
        base_dir=base, models_dir=models, checkpoints_dir=models / "checkpoints", loras_dir=models / "loras",
        input_dir=base / "input", output_dir=base / "output", temp_dir=base / "temp", user_dir=base / "user",
        custom_nodes_dir=base / "custom_nodes", pack_dir=pack, log_path=log_path,
    )
    try:
        import requests

        timeout = float(os.environ.get("COMFYUI_START_TIMEOUT", "240"))
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI exited with {proc.returncode} during start\n{server.log_tail(120)}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(server.url("/object_info"), timeout=30).status_code == 200:
                    break
            if time.monotonic() - t0 > timeout:
                pytest.fail(f"ComfyUI did not answer /object_info within {timeout}s\n{server.log_tail(120)}")
            time.sleep(0.5)
        server.start_seconds = time.monotonic() - t0
        print(f"\n[comfy_server] ComfyUI up at {server.base_url} in {server.start_seconds:.1f}s; log: {log_path}")
        server._start_ws()
        yield server
    finally:
        server.stop()


def _sd15_cache_key() -> str:
    from tests.support import ldm_export, sd_configs

    h = hashlib.sha256()
    for obj in (sd_configs.SD15_UNET_CONFIG, sd_configs.SD15_VAE_CONFIG, sd_configs.SD15_TEXT_ENCODER_CONFIG):
        h.update(json.dumps(obj, sort_keys=True).encode())
    h.update(inspect.getsource(ldm_export).encode())
    return h.hexdigest()[:12]


@pytest.fixture(scope="session")
def sd15_checkpoint_file() -> Path:
    """Path of the cached SD1.5-shaped random-weight checkpoint (fp16 LDM single file), built once.

    Needs no server: usable by any test. Rebuilt when the configs or the exporter change.
    """
    from tests.support.ldm_export import build_random_sd15_checkpoint

    cache = _cache_dir()
    path = cache / f"sd15_random-{_sd15_cache_key()}.safetensors"
    with _file_lock(cache / ".sd15.lock"):
        if not path.exists():
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(os.cpu_count() or 1)  # tests/conftest.py pins 1 thread; this is a one-off
            t0 = time.monotonic()
            try:
                build_random_sd15_checkpoint(path, seed=0)
            finally:
                torch.set_num_threads(threads)
            print(f"\n[sd15_checkpoint] built {path} in {time.monotonic() - t0:.1f}s")
    return path


@dataclass
class Checkpoint:
    name: str  # what CheckpointLoaderSimple's ckpt_name takes
    path: Path  # the file in the server's models/checkpoints (a symlink to the cache)
    cache_path: Path  # the real file

    def txt2img_prompt(self, size: int = 64, steps: int = 1, seed: int = 0, text: str = "a photo of a cat") -> dict:
        """API prompt: CheckpointLoaderSimple -> CLIPTextEncode x2 -> EmptyLatentImage -> KSampler ->
        VAEDecode -> PreviewImage. Node ids: "1" loader, "2"/"3" positive/negative, "4" latent,
        "5" KSampler, "6" VAEDecode, "7" PreviewImage."""
        return {
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": self.name}},
            "2": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["1", 1]}},
            "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
            "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
            "5": {"class_type": "KSampler", "inputs": {
                "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
                "denoise": 1.0, "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
                "latent_image": ["4", 0]}},
            "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
            "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
        }


@pytest.fixture(scope="session")
def sd15_checkpoint(comfy_server: ComfyServer, sd15_checkpoint_file: Path) -> Checkpoint:
    """The SD1.5-shaped checkpoint, placed in the server's models/checkpoints as sd15_random.safetensors."""
    dst = comfy_server.checkpoints_dir / SD15_CKPT_NAME
    if not dst.exists():
        try:
            dst.symlink_to(sd15_checkpoint_file)
        except OSError:
            shutil.copyfile(sd15_checkpoint_file, dst)
    return Checkpoint(name=SD15_CKPT_NAME, path=dst, cache_path=sd15_checkpoint_file)

