"""Load SD 1.x / 2.x / SDXL offline: diffusers folders and single-file checkpoints.

Single files are converted with diffusers' own LDM→diffusers key conversion, against configs that
ship with the pack (`configs/<family>/`), so nothing is fetched from a hub. `.ckpt` files are read
with `torch.load(weights_only=True)`: a pickle cannot run code on the way in.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError
from .detect import FAMILY_LABEL, detect_family, family_of_diffusers_folder
from .tokenizers import find_tokenizer_dir, load_clip_tokenizer

log = logging.getLogger("lora_studio.models")

CONFIG_ROOT = Path(__file__).parent / "configs"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


@dataclass
class BaseModel:
    family: str  # sd15 | sd2 | sdxl
    unet: Any
    vae: Any
    text_encoders: list[Any]
    tokenizers: list[Any]
    scheduler: Any  # DDPMScheduler with the base model's training noise schedule
    prediction_type: str
    source: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return FAMILY_LABEL[self.family]


def _pad_tokens(family: str) -> list[str]:
    return {"sd15": ["<|endoftext|>"], "sd2": ["!"], "sdxl": ["<|endoftext|>", "!"]}[family]


def load_base_model(path: str | Path, model_type: str = "auto", config_dir: str = "", tokenizer_dir: str = "",
                    prediction_type: str = "auto") -> BaseModel:
    path = Path(path).expanduser() if str(path).strip() else Path("")
    if not str(path).strip() or str(path) == ".":
        raise ModelLoadError("No base model given. Fix: choose a checkpoint from models/checkpoints "
                             "(SD 1.5, SD 2.x or SDXL) or give a diffusers folder.")
    if not path.exists():
        raise ModelLoadError(f"Base model not found: '{path}'. Fix: check the path; single files end in "
                             ".safetensors or .ckpt, diffusers folders hold model_index.json.")
    if path.is_dir():
        bm = _load_diffusers_folder(path, model_type, tokenizer_dir)
    elif path.suffix.lower() in SINGLE_FILE_SUFFIXES:
        bm = _load_single_file(path, model_type, config_dir, tokenizer_dir)
    else:
        raise ModelLoadError(f"'{path.name}' is neither a .safetensors/.ckpt checkpoint nor a diffusers folder. "
                             "Fix: pick a checkpoint from models/checkpoints.")
    if prediction_type != "auto":
        bm.prediction_type = prediction_type
    bm.scheduler.register_to_config(prediction_type=bm.prediction_type)
    for m in [bm.unet, bm.vae, *bm.text_encoders]:
        m.requires_grad_(False)
        m.eval()
    log.info("loaded %s base model from %s (%s)", bm.label, path, bm.prediction_type)
    return bm


# ---------------------------------------------------------------- diffusers folders
def _load_diffusers_folder(folder: Path, model_type: str, tokenizer_dir: str) -> BaseModel:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if not (folder / "unet").is_dir():
        raise ModelLoadError(f"'{folder}' is a folder but not a diffusers model (no unet/ inside). Fix: give the "
                             "folder that holds model_index.json, unet/, vae/, text_encoder/.")
    family = family_of_diffusers_folder(folder) if model_type == "auto" else model_type
    kw = dict(local_files_only=True)
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **kw)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw)
        tes = [CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **kw)]
        if family == "sdxl":
            tes.append(CLIPTextModelWithProjection.from_pretrained(folder, subfolder="text_encoder_2", **kw))
        sched_dir = folder / "scheduler"
        scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler", **kw) if sched_dir.is_dir() \
            else DDPMScheduler.from_pretrained(CONFIG_ROOT / family, subfolder="scheduler")
    except (OSError, ValueError, EnvironmentError) as e:
        raise ModelLoadError(f"Could not load the diffusers model in '{folder}': {e}. Fix: check that every "
                             "component folder has its config and weights.") from None
    toks, used = [], []
    for i, pad in enumerate(_pad_tokens(family)):
        sub = folder / ("tokenizer" if i == 0 else "tokenizer_2")
        used.append(sub if (sub / "vocab.json").is_file() else find_tokenizer_dir(tokenizer_dir))
        toks.append(load_clip_tokenizer(used[-1], pad))
    pred = scheduler.config.get("prediction_type", "epsilon")
    return BaseModel(family, unet, vae, tes, toks, scheduler, pred, folder, extra={"tokenizer": str(used[0])})


# ---------------------------------------------------------------- single files
def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors and torch raise many types for a bad file
        raise ModelLoadError(f"Could not read '{path.name}': {e.__class__.__name__}: {e}. Fix: the file may be "
                             "incomplete or not a model; download it again, or convert a .ckpt to .safetensors.") from None
    while isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ModelLoadError(f"'{path.name}' holds no state dict. Fix: pick a Stable Diffusion checkpoint.")
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def _config(config_root: Path, sub: str) -> dict:
    f = config_root / sub / ("scheduler_config.json" if sub == "scheduler" else "config.json")
    if not f.is_file():
        raise ModelLoadError(f"Missing config '{f}'. Fix: model_config_dir must be a diffusers-layout folder with "
                             f"{sub}/config.json.")
    return json.loads(f.read_text())


def _load_single_file(path: Path, model_type: str, config_dir: str, tokenizer_dir: str) -> BaseModel:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint,
                                                     convert_ldm_vae_checkpoint, convert_open_clip_checkpoint)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    sd = read_state_dict(path)
    family = detect_family(list(sd), path)
    if model_type != "auto" and model_type != family:
        raise ModelLoadError(f"'{path.name}' is {FAMILY_LABEL[family]}, but model_type is set to "
                             f"{FAMILY_LABEL.get(model_type, model_type)}. Fix: set model_type to 'auto' or '{family}'.")
    root = Path(config_dir).expanduser() if config_dir else CONFIG_ROOT / family

    unet_cfg = _config(root, "unet")
    unet = _from_config(UNet2DConditionModel, unet_cfg)
    _fill(unet, convert_ldm_unet_checkpoint(sd, unet_cfg), "UNet", path)
    vae_cfg = _config(root, "vae")
    vae = _from_config(AutoencoderKL, vae_cfg)
    _fill(vae, convert_ldm_vae_checkpoint(sd, vae_cfg), "VAE", path)

    tes = []
    te_cfg = CLIPTextConfig(**_config(root, "text_encoder"))
    te = CLIPTextModel(te_cfg)
    if family == "sd2":
        te_sd = convert_open_clip_checkpoint(te, sd, prefix="cond_stage_model.model.")
    else:
        prefix = "conditioner.embedders.0.transformer." if family == "sdxl" else "cond_stage_model.transformer."
        te_sd = convert_ldm_clip_checkpoint(sd, remove_prefix=prefix)
    _fill(te, te_sd, "text encoder", path)
    tes.append(te)
    if family == "sdxl":
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**_config(root, "text_encoder_2")))
        _fill(te2, convert_open_clip_checkpoint(te2, sd, prefix="conditioner.embedders.1.model."),
              "second text encoder", path)
        tes.append(te2)
    del sd

    scheduler = DDPMScheduler.from_config(_config(root, "scheduler"))
    pred = scheduler.config.get("prediction_type", "epsilon")
    if family == "sd2" and not config_dir:
        pred = sd2_prediction_type(path.stem)
    tok_dir = find_tokenizer_dir(tokenizer_dir, near=root)
    toks = [load_clip_tokenizer(tok_dir, pad) for pad in _pad_tokens(family)]
    return BaseModel(family, unet, vae, tes, toks, scheduler, pred, path, extra={"tokenizer": str(tok_dir)})


def sd2_prediction_type(stem: str) -> str:
    """SD 2.0-v / 2.1 (768 px) predict v; the 512 px "base" models predict noise. The weights can't tell,
    so the file name decides (as A1111 and ComfyUI guess too); `prediction_type` in the config overrides."""
    return "epsilon" if "base" in stem.lower() or "512" in stem else "v_prediction"


def _from_config(cls, cfg: dict):
    from accelerate import init_empty_weights

    with init_empty_weights():
        return cls.from_config(cfg)


def _fill(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str, path: Path) -> None:
    """Load converted weights; a checkpoint that does not fit the config is an error, not a silent half-load."""
    own = model.state_dict()
    # CLIPTextModel lost its `text_model.` level in transformers 5.6; match whichever this version has.
    if not any(k.startswith("text_model.") for k in own):
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    missing = [k for k in own if k not in state and not k.endswith("position_ids")]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        bad = (missing + wrong)[:3]
        raise ModelLoadError(f"The {what} in '{path.name}' does not match its config ({len(missing)} missing, "
                             f"{len(wrong)} mis-shaped weights, e.g. {bad}). Fix: the file may be damaged or of a "
                             "variant LoRA Studio has no config for; give model_config_dir with its diffusers configs.")
    model.load_state_dict({k: state[k].float() for k in own if k in state}, strict=False, assign=True)
    for name, t in list(model.named_buffers()):  # non-persistent buffers created on meta (position ids)
        if t.is_meta:
            raise ModelLoadError(f"The {what} has an uninitialised buffer {name}. Fix: report this as a bug.")
