"""Shared fixtures: offline by force, tiny random models from the shipped tiny configs, sample data.

The network is blocked for every test (only loopback is allowed, for the real-ComfyUI suite):
a loader that tries to reach a hub fails loudly instead of passing on a developer's machine.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


class NetworkBlocked(RuntimeError):
    pass


_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and (host in ("localhost", "::1") or host.startswith("127.") or self.family == socket.AF_UNIX):
        return _real_connect(self, address)
    raise NetworkBlocked(f"test tried to reach the network: {address!r}")


@pytest.fixture(autouse=True, scope="session")
def _no_network():
    socket.socket.connect = _guarded_connect
    yield
    socket.socket.connect = _real_connect


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # Two OpenMP threads on two shared cores make tiny convolutions ~100x slower here.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_sd15(tmp_path_factory) -> Path:
    from trainer.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sd15", "sd15")


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> Path:
    from trainer.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sdxl", "sdxl")


SAMPLE = REPO / "example_data" / "watercolor_fox"


@pytest.fixture
def sample_dataset(tmp_path) -> Path:
    """The shipped sample dataset, first 4 images (copied: tests may not touch the repo)."""
    dst = tmp_path / "dataset"
    (dst / "images").mkdir(parents=True)
    lines = (SAMPLE / "metadata.jsonl").read_text().splitlines()[:4]
    for line in lines:
        import json

        shutil.copy(SAMPLE / "images" / json.loads(line)["file"], dst / "images")
    (dst / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return dst


def tiny_overrides(tmp_path: Path, base: Path, dataset: Path, **extra) -> dict:
    """A config that trains a tiny model in seconds and clearly lowers its loss."""
    cfg = dict(base_model=str(base), dataset=str(dataset), trigger_token="wcfox", resolution=64, test_mode=True,
               max_train_steps=30, lr_warmup_steps=0, lr_scheduler="constant", learning_rate=1e-2,
               gradient_accumulation_steps=1, train_batch_size=2, rank=8, alpha=8.0, snr_gamma=0.0,
               unet_target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj",
                                    "ff.net.2"],
               save_precision="fp32", output_dir=str(tmp_path / "loras"), jobs_dir=str(tmp_path / "jobs"),
               cache_dir=str(tmp_path / "cache"), name="tiny", seed=1234)
    cfg.update(extra)
    return cfg


def load_pack():
    """Import the repo as a package the way ComfyUI loads a custom node folder."""
    name = "lora_studio_pack"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def comfyui_tree() -> Path | None:
    """The ComfyUI source tree for the node tests: COMFYUI_PATH, else the nearest `../shared/comfyui` above the
    repo (the project's read-only copy); None if neither is a ComfyUI tree."""
    raw = os.environ.get("COMFYUI_PATH", "").strip()
    candidates = [Path(raw).expanduser()] if raw else [p / "shared" / "comfyui" for p in REPO.parents]
    return next((p.resolve() for p in candidates if (p / "comfy_api" / "latest").is_dir()), None)


def load_nodes():
    """The pack's node modules, built on the real ComfyUI's `comfy_api` (V3 node API); skips, saying why, where
    it is missing. COMFYUI_PATH's tree is appended to sys.path (after everything else, so it shadows nothing)."""
    comfy = comfyui_tree()
    if comfy is None:
        pytest.skip("the node tests need ComfyUI's comfy_api: set COMFYUI_PATH to a ComfyUI 0.3.64 tree "
                    f"(now {os.environ.get('COMFYUI_PATH', 'unset')!r}; no ../shared/comfyui above the repo either)")
    if str(comfy) not in sys.path:
        sys.path.append(str(comfy))
    try:
        import torch
        from comfy.cli_args import args

        if not torch.cuda.is_available():
            args.cpu = True  # as `main.py --cpu`: comfy.model_management must not look for a GPU on import
        import comfy_api.latest  # noqa: F401
    except ImportError as e:
        pytest.skip(f"ComfyUI's comfy_api at {comfy} does not import with {sys.executable}: {e} "
                    "(pip install -r requirements-test.txt, or run with the Python that runs ComfyUI)")
    load_pack()
    import importlib

    nodes = importlib.import_module("lora_studio_pack.nodes")
    # ComfyUI's folder_paths is importable now, naming the read-only tree's own folders: the unit tests see no
    # ComfyUI folders (as before the nodes needed comfy_api); a test that wants some sets them itself.
    importlib.import_module("lora_studio_pack.nodes.comfy_bridge").folder_paths = lambda: None
    return nodes


@pytest.fixture(scope="module")
def nodes():
    """The pack's node modules on the real comfy_api (skipped, saying why, without it)."""
    return load_nodes()


def point_configure_at(monkeypatch, ckpt: Path, loras: Path) -> None:
    """Configure LoRA without ComfyUI's models folder: `ckpt` is the one checkpoint it lists, LoRAs go to `loras`."""
    configure = importlib.import_module("lora_studio_pack.nodes.configure")
    monkeypatch.setattr(configure, "checkpoint_names", lambda: [ckpt.name])
    monkeypatch.setattr(configure, "checkpoint_path", lambda name: str(ckpt))
    monkeypatch.setattr(configure, "loras_dir", lambda: loras)


@pytest.fixture
def with_checkpoint(nodes, monkeypatch, tmp_path) -> Path:
    """Configure LoRA listing one (empty) checkpoint, v1-5.safetensors, with its LoRA folder in tmp."""
    ckpt = tmp_path / "v1-5.safetensors"
    ckpt.write_bytes(b"")
    point_configure_at(monkeypatch, ckpt, tmp_path / "loras")
    return ckpt


def tree(path: Path) -> set[str]:
    """Every file and folder under `path` (relative), for 'nothing was written' checks."""
    return {str(p.relative_to(path)) for p in path.rglob("*")} if path.exists() else set()
