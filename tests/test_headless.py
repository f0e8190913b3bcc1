"""Headless from a single file: no ComfyUI checkout, no network, the pack's own CLIP tokenizer.

conftest blocks every non-loopback socket for the whole session; here COMFYUI_PATH is unset too, and
the single files are converted against config folders without a tokenizer, so the pack's own
vocabulary (trainer/models/clip_tokenizer/) is the only one there is.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import pytest
import torch
from support.ldm_export import _prefixed, diffusers_to_ldm_state_dict, open_clip_to_ldm, save_ldm_checkpoint, \
    unet_to_ldm, vae_to_ldm

from trainer.models import build_tiny_model, load_base_model
from trainer.models.load import CONFIG_ROOT
from trainer.models.tokenizers import BPE_FILE, PACK_TOKENIZER_DIR, bpe_to_tokenizer_files, find_tokenizer_dir, \
    load_clip_tokenizer

COMFY = Path(os.environ.get("COMFYUI_PATH", "")) / "comfy" / "sd1_tokenizer"
CLIP_VOCAB = 49408


def test_shipped_vocabulary_is_openais_file_with_its_license():
    data = (PACK_TOKENIZER_DIR / BPE_FILE).read_bytes()
    # the sha256 of clip/bpe_simple_vocab_16e6.txt.gz in openai/CLIP and in open_clip_torch
    assert hashlib.sha256(data).hexdigest() == "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
    assert "MIT License" in (PACK_TOKENIZER_DIR / "LICENSE").read_text()


@pytest.mark.parametrize("pad,pad_id", [("<|endoftext|>", 49407), ("!", 0)])
def test_pack_tokenizer_gives_clips_token_ids(pad, pad_id):
    tok = load_clip_tokenizer(PACK_TOKENIZER_DIR, pad)
    assert len(tok) == CLIP_VOCAB
    ids = tok("a photo of a cat", padding="max_length", max_length=77, truncation=True).input_ids
    # CLIP's ids for this prompt (start 49406, "a" 320, "photo" 1125, "of" 539, "cat" 2368, end 49407)
    assert ids[:7] == [49406, 320, 1125, 539, 320, 2368, 49407] and len(ids) == 77
    assert ids[7:] == [pad_id] * 70


@pytest.mark.skipif(not (COMFY / "vocab.json").is_file(),
                    reason="ComfyUI's comfy/sd1_tokenizer not found: set COMFYUI_PATH to a ComfyUI folder")
def test_pack_tokenizer_equals_comfyuis(tmp_path):
    derived = bpe_to_tokenizer_files(PACK_TOKENIZER_DIR / BPE_FILE, tmp_path)
    assert (derived / "merges.txt").read_bytes() == (COMFY / "merges.txt").read_bytes()
    assert json.loads((derived / "vocab.json").read_text("utf-8")) == json.loads((COMFY / "vocab.json").read_text("utf-8"))
    ours, theirs = load_clip_tokenizer(PACK_TOKENIZER_DIR, "!"), load_clip_tokenizer(COMFY, "!")
    rng = random.Random(0)
    words = list(json.loads((COMFY / "vocab.json").read_text("utf-8")))
    captions = [json.loads(line)["prompt"] for line in
                (Path(__file__).parents[1] / "example_data" / "watercolor_fox" / "metadata.jsonl").read_text().splitlines()]
    strings = captions + ["", "   ", "UPPER lower MiXeD", "naïve café – “quotes” ½ 東京 🦊", "a,b;c:d!e?f", "x" * 400,
                          "<|startoftext|> inside <|endoftext|> text", "don't won't it's", "1234567890 3.14 1e-6"]
    strings += [" ".join(rng.choice(words).replace("</w>", "") for _ in range(rng.randint(1, 60))) for _ in range(300)]
    strings += ["".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(1, 80))) for _ in range(200)]
    kw = dict(padding="max_length", max_length=77, truncation=True)
    for s in strings:
        assert ours(s, **kw).input_ids == theirs(s, **kw).input_ids, s


def test_comfyuis_and_a_model_folders_own_tokenizer_are_preferred(tmp_path, monkeypatch):
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    assert find_tokenizer_dir() == PACK_TOKENIZER_DIR
    comfy = tmp_path / "ComfyUI"
    bpe_to_tokenizer_files(PACK_TOKENIZER_DIR / BPE_FILE, comfy / "comfy" / "sd1_tokenizer")
    monkeypatch.setenv("COMFYUI_PATH", str(comfy))
    assert find_tokenizer_dir() == comfy / "comfy" / "sd1_tokenizer"
    model = tmp_path / "model"
    bpe_to_tokenizer_files(PACK_TOKENIZER_DIR / BPE_FILE, model / "tokenizer")
    assert find_tokenizer_dir(near=model) == model / "tokenizer"


# ------------------------------------------------------------------ single files, trained headless
def _real_vocab_configs(family: str, dst: Path) -> Path:
    """The tiny configs with CLIP's real vocabulary size and special ids, and no tokenizer folder."""
    shutil.copytree(CONFIG_ROOT / f"tiny-{family}", dst)
    for sub in ("text_encoder", "text_encoder_2"):
        f = dst / sub / "config.json"
        if f.is_file():
            cfg = json.loads(f.read_text())
            cfg.update(vocab_size=CLIP_VOCAB, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
            f.write_text(json.dumps(cfg))
    return dst


def _single_file(family: str, tmp_path: Path) -> tuple[Path, Path]:
    configs = _real_vocab_configs(family, tmp_path / "configs")
    ref = load_base_model(build_tiny_model(tmp_path / "folder", family, config_root=configs))
    if family == "sd2":
        sd = {**_prefixed("model.diffusion_model.", unet_to_ldm(ref.unet)),
              **_prefixed("first_stage_model.", vae_to_ldm(ref.vae)),
              **_prefixed("cond_stage_model.model.", open_clip_to_ldm(ref.text_encoders[0]))}
    else:
        sd = diffusers_to_ldm_state_dict(ref.unet, ref.vae, *ref.text_encoders)
    name = {"sd15": "sd15-tiny.safetensors", "sd2": "v2-1_768-tiny.safetensors", "sdxl": "sdxl-tiny.safetensors"}
    path = save_ldm_checkpoint(tmp_path / name[family], sd)
    shutil.rmtree(tmp_path / "folder")  # nothing but the single file and plain configs is left
    return Path(path), configs


@pytest.mark.parametrize("family", ["sd15", "sd2", "sdxl"])
def test_single_file_trains_headless_without_comfyui(family, tmp_path, sample_dataset, monkeypatch, capsys):
    from trainer.cli import main

    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    ckpt, configs = _single_file(family, tmp_path)
    rc = main(["train", "--base-model", str(ckpt), "--dataset", str(sample_dataset), "--trigger", "wcfox",
               "--output-dir", str(tmp_path / "loras"), "--jobs-dir", str(tmp_path / "jobs"), "--name", family,
               "--set", f"model_config_dir={configs}", "--set", "resolution=64", "--set", "test_mode=true",
               "--set", "max_train_steps=3", "--set", "lr_warmup_steps=0", "--set", "gradient_accumulation_steps=1",
               "--set", "preview_every=-1", "--set", f"cache_dir={tmp_path / 'cache'}"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    record = json.loads(next((tmp_path / "jobs").glob("*.json")).read_text())
    assert record["status"] == "finished" and record["base_model"]["family"] == family
    assert record["base_model"]["tokenizer"] == str(PACK_TOKENIZER_DIR)
    assert Path(record["outputs"]["lora"]).is_file()
    bm = load_base_model(ckpt, config_dir=str(configs))
    assert [len(t) for t in bm.tokenizers] == [CLIP_VOCAB] * (2 if family == "sdxl" else 1)
    assert [t.pad_token for t in bm.tokenizers] == {"sd15": ["<|endoftext|>"], "sd2": ["!"],
                                                    "sdxl": ["<|endoftext|>", "!"]}[family]
    with torch.no_grad():  # the real vocabulary reaches the real-vocabulary embedding rows
        ids = bm.tokenizers[0](["a photo of a cat"], return_tensors="pt").input_ids
        assert int(ids.max()) == 49407 and bm.text_encoders[0](ids)[0].isfinite().all()


def _installed_command() -> str | None:
    """The `lora-studio` of this Python's environment, when the pack is pip-installed into it."""
    import sys

    exe = Path(sys.executable).parent / "lora-studio"
    return str(exe) if exe.is_file() else None


_NO_NETWORK_SITE = """
import socket
_connect = socket.socket.connect
def _guarded(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if self.family == socket.AF_UNIX or (isinstance(host, str) and (host in ("localhost", "::1") or host.startswith("127."))):
        return _connect(self, address)
    raise OSError(f"network blocked by the test: {address!r}")
socket.socket.connect = _guarded
import os
open(os.environ["LORA_STUDIO_TEST_NONET_MARK"], "w").write("sockets blocked")
"""


@pytest.mark.skipif(_installed_command() is None,
                    reason="the pack is not pip-installed in this environment (`pip install .` gives lora-studio)")
@pytest.mark.parametrize("family", ["sd15", "sd2", "sdxl"])
def test_installed_command_trains_a_single_file_without_comfyui(family, tmp_path, sample_dataset):
    """The console command, in its own process with sockets blocked (a sitecustomize) and no COMFYUI_PATH."""
    import subprocess

    ckpt, configs = _single_file(family, tmp_path)
    site = tmp_path / "nonet"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_NO_NETWORK_SITE)
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_PATH", "PYTHONPATH")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(site),
               LORA_STUDIO_TEST_NONET_MARK=str(site / "active"))
    out = subprocess.run([_installed_command(), "train", "--base-model", str(ckpt), "--dataset", str(sample_dataset),
                          "--trigger", "wcfox", "--output-dir", str(tmp_path / "loras"), "--jobs-dir",
                          str(tmp_path / "jobs"), "--set", f"model_config_dir={configs}", "--set", "resolution=64",
                          "--set", "test_mode=true", "--set", "max_train_steps=2", "--set", "lr_warmup_steps=0",
                          "--set", "gradient_accumulation_steps=1", "--set", "preview_every=-1"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (site / "active").is_file()  # the guard really ran in the command's process
    assert "Traceback" not in out.stdout + out.stderr and "torchvision" not in out.stdout + out.stderr
    record = json.loads(next((tmp_path / "jobs").glob("*.json")).read_text())
    assert record["status"] == "finished" and record["base_model"]["tokenizer"].endswith("clip_tokenizer")
    assert record["base_model"]["family"] == family
    assert record["commands"]["rerun"].startswith("lora-studio train --job ") or \
        record["commands"]["rerun"].startswith(str(Path(_installed_command()).parent))
