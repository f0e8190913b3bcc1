"""Write results so that a crash never leaves half a file and nothing is overwritten unasked.

- `<name>.safetensors` in kohya keys with `ss_*` / `modelspec.*` metadata (ComfyUI, A1111/Forge,
  InvokeAI and diffusers read it),
- `<name>.adapter_config.json` beside it (peft's LoraConfig per model part: the guide's
  "copy both files"),
- the job record, the guide's `lora/jobs/<id>.json`.
Each file is written to a hidden partial in the same folder, flushed to disk, then linked or
renamed into place in one step (trainer/atomic.py).
"""
from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import torch

from . import atomic
from .errors import ExportError
from .interop import sgm_state_dict
from .lora import text_encoder_prefixes, to_kohya

log = logging.getLogger("lora_studio.export")

SAVE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
BASE_VERSION = {"sd15": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}
# modelspec / kohya (library/sai_model_spec.py): SD2 is "-512" for epsilon and "-768-v" for v-prediction
ARCHITECTURE = {"sd15": "stable-diffusion-v1", "sd2": "stable-diffusion-v2-512", "sd2-v": "stable-diffusion-v2-768-v",
                "sdxl": "stable-diffusion-xl-v1-base"}
# kohya names the implementation after the key layout: SGM for SDXL LoRAs, diffusers' for SD1/SD2
IMPLEMENTATION = {"sdxl": "https://github.com/Stability-AI/generative-models"}
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def sanitize_name(name: str) -> str:
    """A file-name stem that is safe everywhere: no separators, no '..', no reserved device names."""
    stem = re.sub(r"\.safetensors$", "", str(name).strip(), flags=re.I)
    parts = [p for p in re.split(r"[\\/]+", stem) if p not in ("", ".", "..")]  # path pieces become words
    stem = "_".join(parts)
    stem = re.sub(r"[^\w\-. ]+", "_", stem, flags=re.UNICODE)
    stem = re.sub(r"\.{2,}", ".", stem)
    stem = re.sub(r"\s+", "_", stem).strip(" ._")[:100]
    if not stem or stem.lower().split(".")[0] in _RESERVED:
        stem = f"lora_{stem}" if stem else "lora"
    return stem


ADAPTER_SUFFIX = ".adapter_config.json"


def free_path(folder: Path, stem: str, suffix: str = ".safetensors") -> Path:
    """`folder/stem.suffix`, or `stem_2`, `stem_3`, … if taken (the Load LoRA node caches by name).
    A name whose adapter config exists counts as taken too (its LoRA may be being written)."""
    candidate = folder / f"{stem}{suffix}"
    n = 2
    while candidate.exists() or candidate.with_suffix(ADAPTER_SUFFIX).exists():
        candidate = folder / f"{stem}_{n}{suffix}"
        n += 1
    return candidate


_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]):
    """Serialise in a fixed order (keys sorted, metadata sorted).

    safetensors' own writer keeps metadata in a hash map, so two identical runs give files whose
    bytes differ; a LoRA's identity (its sha256 in the job record) should depend on its content only.
    """
    header: dict = {"__metadata__": dict(sorted(metadata.items()))}
    offset, blobs = 0, []
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    yield len(head).to_bytes(8, "little") + head
    yield from blobs


def _write_safetensors(p: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    with open(p, "wb") as f:
        for chunk in safetensors_bytes(tensors, metadata):
            f.write(chunk)


def write_safetensors_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                             overwrite: bool = False) -> Path:
    return atomic.write_atomic(path, lambda p: _write_safetensors(p, tensors, metadata), overwrite=overwrite)


def kohya_state_dict(family: str, unet_lora: dict, te_loras: list[dict], alpha: float,
                     dtype: torch.dtype, unet_config=None) -> dict[str, torch.Tensor]:
    """kohya keys from peft-keyed adapter weights; SDXL UNet modules by their SGM names (as kohya's SDXL files)."""
    if family == "sdxl":
        if unet_config is None:
            raise ValueError("SDXL export needs the UNet config to number the SGM blocks")
        unet_lora = sgm_state_dict(unet_lora, unet_config)
    out = to_kohya("lora_unet", unet_lora, alpha, False, dtype)
    for prefix, te in zip(text_encoder_prefixes(family), te_loras):
        out.update(to_kohya(prefix, te, alpha, True, dtype))
    return out


def architecture(family: str, prediction_type: str) -> str:
    key = "sd2-v" if family == "sd2" and prediction_type == "v_prediction" else family
    return ARCHITECTURE[key] + "/lora"


def lora_metadata(*, family: str, cfg, base_hash: str, dataset_hash: str, n_images: int, steps: int,
                  prediction_type: str, name: str) -> dict[str, str]:
    """kohya `ss_*` and Stability `modelspec.*` keys. No timestamps: the same run gives the same file."""
    res = f"({cfg.resolution}, {cfg.resolution})"
    md = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(cfg.rank),
        "ss_network_alpha": str(float(cfg.alpha)),
        "ss_base_model_version": BASE_VERSION[family],
        "ss_v2": str(family == "sd2"),
        "ss_sd_model_name": Path(str(cfg.base_model)).name,
        "ss_new_sd_model_hash": base_hash,
        "ss_resolution": res,
        "ss_max_train_steps": str(cfg.max_train_steps),
        "ss_steps": str(steps),
        "ss_learning_rate": str(cfg.learning_rate),
        "ss_unet_lr": str(cfg.learning_rate),
        "ss_text_encoder_lr": str(cfg.text_encoder_lr if cfg.train_text_encoder else 0),
        "ss_network_train_unet_only": str(not cfg.train_text_encoder),
        "ss_lr_scheduler": cfg.lr_scheduler,
        "ss_lr_warmup_steps": str(cfg.lr_warmup_steps),
        "ss_batch_size_per_device": str(cfg.train_batch_size),
        "ss_gradient_accumulation_steps": str(cfg.gradient_accumulation_steps),
        "ss_mixed_precision": cfg.mixed_precision,
        "ss_min_snr_gamma": str(cfg.snr_gamma),
        "ss_noise_offset": str(cfg.noise_offset),
        "ss_seed": str(cfg.seed),
        "ss_num_train_images": str(n_images),
        "ss_dataset_hash": dataset_hash,
        "ss_trigger_token": cfg.trigger_token,
        "ss_output_name": name,
        "ss_training_preset": cfg.preset,
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": architecture(family, prediction_type),
        "modelspec.implementation": IMPLEMENTATION.get(family, "diffusers"),
        "modelspec.title": name,
        "modelspec.resolution": f"{cfg.resolution}x{cfg.resolution}",
        "modelspec.prediction_type": "v" if prediction_type == "v_prediction" else "epsilon",
        "modelspec.trigger_phrase": cfg.trigger_token,
        "lora_studio.config": cfg.to_json(),
    }
    return md


def adapter_config(cfg, family: str) -> dict[str, Any]:
    """peft LoraConfig of each part, keyed as diffusers names them, plus how the file is keyed."""
    from .lora import AdapterSpec

    unet = AdapterSpec(cfg.rank, cfg.alpha, tuple(cfg.unet_target_modules), cfg.lora_dropout).peft_config()
    parts = {"unet": unet.to_dict()}
    if cfg.train_text_encoder:
        te = AdapterSpec(cfg.rank, cfg.alpha, tuple(cfg.text_encoder_target_modules), cfg.lora_dropout).peft_config()
        for i, _ in enumerate(text_encoder_prefixes(family)):
            parts["text_encoder" if i == 0 else "text_encoder_2"] = te.to_dict()
    for p in parts.values():  # sets are not JSON; keep the lists sorted for stable files
        for k, v in list(p.items()):
            if isinstance(v, set):
                p[k] = sorted(v)
    unet_names = "SGM (input_blocks/middle_block/output_blocks)" if family == "sdxl" else "diffusers"
    return {"format": f"kohya (lora_unet_* with {unet_names} module names / lora_te*_*, lora_down/lora_up/alpha)", "base_model_family": family,
            "rank": cfg.rank, "alpha": cfg.alpha, "peft": parts}


def save_lora(out_dir: Path, stem: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str],
              adapter_cfg: dict[str, Any]) -> tuple[Path, Path]:
    """Write `<stem>.safetensors` (or `<stem>_N` if taken) and its adapter config; never overwrites."""
    out_dir = Path(out_dir).expanduser()
    stem = sanitize_name(stem)
    # Both files are written under hidden names first. Then the adapter config claims the name (linked, never
    # overwriting) and the LoRA follows: a kill at any point leaves no LoRA without its config and no half file
    # under a final name (at worst a config whose LoRA is missing: that name is skipped).
    text = json.dumps(adapter_cfg, indent=2, sort_keys=True, default=str)
    cfg_tmp = atomic.prepare(out_dir / f"{stem}{ADAPTER_SUFFIX}", lambda p: p.write_text(text, encoding="utf-8"))
    try:
        lora_tmp = atomic.prepare(out_dir / f"{stem}.safetensors", lambda p: _write_safetensors(p, tensors, metadata))
    except BaseException:
        atomic.unlink_quietly(cfg_tmp)
        raise
    try:
        for _ in range(10_000):  # another writer may take the free name between our look and our link: look again
            path = free_path(out_dir, stem)
            cfg_path = path.with_suffix(ADAPTER_SUFFIX)
            try:
                atomic.commit(cfg_tmp, cfg_path, overwrite=False)
            except FileExistsError:
                continue
            try:
                atomic.commit(lora_tmp, path, overwrite=False)
                break
            except BaseException:
                atomic.unlink_quietly(cfg_path)
                if not isinstance(sys.exc_info()[1], FileExistsError):
                    raise
        else:
            raise ExportError(f"No free file name for '{stem}' in {out_dir}. Fix: choose another name.")
    finally:
        atomic.unlink_quietly(cfg_tmp)
        atomic.unlink_quietly(lora_tmp)
    log.info("wrote %s", path)
    return path, cfg_path


def read_lora_metadata(path: Path) -> dict[str, str]:
    """The header metadata of a LoRA file, or an ExportError saying why this is not one."""
    import safetensors

    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ExportError(f"LoRA '{path}' {what}. Fix: name the .safetensors file the training wrote.")
    try:
        with safetensors.safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ExportError(f"'{path}' is not a readable .safetensors file ({str(e)[:120]}). Fix: name the LoRA "
                          "file itself (its .adapter_config.json is only the companion).") from None


def base_mismatch_warning(metadata: dict[str, str], base_sha256: str, base_name: str) -> str | None:
    """The guide's "colour shifts: wrong base model" row as a check: None when the LoRA was trained on this base."""
    trained = metadata.get("ss_new_sd_model_hash", "")
    if not trained or trained == base_sha256:
        return None
    return (f"This LoRA was trained on '{metadata.get('ss_sd_model_name', '?')}' (sha256 {trained[:12]}…) but is "
            f"applied to '{base_name}' (sha256 {base_sha256[:12]}…). Expect colour shifts and a weaker effect. "
            "Fix: use the same base model for training and for generating.")
