"""ComfyUI's own custom-node loader on this pack, without a server: the V3 entry point registers our nodes,
and an import error inside the pack shows as ComfyUI's "(IMPORT FAILED)" with its traceback (the pack's
__init__.py catches nothing)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO_ROOT

pytestmark = pytest.mark.e2e

LOADER = r"""
import asyncio, json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
sys.path.insert(0, sys.argv[1])
from comfy.cli_args import args
args.cpu = True  # as main.py --cpu: no GPU needed to load nodes
import folder_paths
folder_paths.folder_names_and_paths["custom_nodes"] = ([sys.argv[2]], set())
import nodes
asyncio.run(nodes.init_external_custom_nodes())
print(json.dumps(sorted(k for k in nodes.NODE_CLASS_MAPPINGS if k.startswith("LoraStudio_"))))
"""
BROKEN = "raise ImportError('lora-studio-test: a dependency that does not import')\n"


def _copy_pack(dst: Path) -> Path:
    skip = shutil.ignore_patterns(".git", "tests", "bench", "docs", "example_data", "__pycache__", "*.pyc")
    shutil.copytree(REPO_ROOT, dst, ignore=skip)
    return dst


def _load(comfyui_path: Path, custom_nodes: Path) -> subprocess.CompletedProcess:
    python = os.environ.get("COMFYUI_PYTHON") or sys.executable
    return subprocess.run([python, "-c", LOADER, str(comfyui_path), str(custom_nodes)], cwd=comfyui_path,
                          capture_output=True, text=True, timeout=300)


def test_comfyui_registers_the_v3_nodes_and_reports_an_import_failure(comfyui_path, tmp_path):
    custom = tmp_path / "custom_nodes"
    custom.mkdir()
    (custom / "lora_studio").symlink_to(REPO_ROOT, target_is_directory=True)
    broken = _copy_pack(custom / "lora_studio_broken")
    module = broken / "nodes" / "configure.py"
    module.write_text(module.read_text() + "\n" + BROKEN)

    out = _load(comfyui_path, custom)
    assert out.returncode == 0, out.stderr[-3000:]
    registered = out.stdout.strip().splitlines()[-1]
    assert registered == ('["LoraStudio_ConfigureLoRA", "LoraStudio_DatasetFromImages", "LoraStudio_LoadDataset", '
                          '"LoraStudio_SaveLoRAToModels", "LoraStudio_TrainLoRA"]'), out.stderr[-3000:]
    failed = [line for line in out.stderr.splitlines() if "(IMPORT FAILED)" in line]
    assert len(failed) == 1 and failed[0].endswith("lora_studio_broken"), out.stderr[-3000:]
    assert "lora-studio-test: a dependency that does not import" in out.stderr  # ComfyUI shows the cause
