"""Class images for DreamBooth-style prior preservation, and the prior-weighted loss.

Prior preservation trains on pictures of the *class* ("portrait of a person") next to the subject,
so the LoRA learns "this person" without forgetting what people look like. The class pictures come
from the user's `class_data_dir`, or are rendered once by the base model itself and cached: the
cache folder is named by a hash of everything that shapes them (model, prompt, size, steps, seed,
sampler), so a rerun renders nothing, a larger `num_class_images` renders only the new ones, and
any change of setting gets a fresh folder. Image `i` always uses seed `class_seed + i`, so the set
is the same whether it was made in one run or in three interrupted ones.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image

from .atomic import write_json_atomic, write_png_atomic
from .config import TrainConfig
from .data import IMAGE_EXTENSIONS, Sample
from .data.safety import is_text, shown
from .errors import DatasetError, TrainingCancelled
from .models import BaseModel
from .pipeline import SAMPLER, build_pipeline, seeded, to_pictures

log = logging.getLogger("lora_studio.prior")

# (prompt, seed, width, height, steps) -> picture. Injectable so tests can count renders.
Generate = Callable[[str, int, int, int, int], Image.Image]

CACHE_FORMAT = "lora-studio-class-images-v1"  # in every key: a change in rendering invalidates old sets
CLASS_GUIDANCE = 7.5  # the pipelines' default, as in diffusers' DreamBooth script
MANIFEST = "manifest.json"


def class_images(cfg: TrainConfig, base_model: BaseModel, device: torch.device | str, cache_root: Path, *,
                 model_id: str, generate: Generate | None = None, callbacks: Any = None) -> list[Sample]:
    """The class pictures for this run, each captioned with `cfg.class_prompt`; [] when prior preservation is off.

    `model_id` identifies the base model (its sha256): cached pictures of one model are never reused for
    another. `callbacks` (a loop.Callbacks) gets progress messages and may stop a long render between
    pictures; what was rendered stays cached.
    """
    if not cfg.with_prior_preservation:
        return []
    if cfg.class_data_dir:
        return user_class_images(Path(cfg.class_data_dir), cfg.class_prompt, cfg.num_class_images)
    if not model_id:
        raise ValueError("class_images needs model_id (the base model's sha256) to key its cache")
    key = cache_key(model_id, cfg.class_prompt, cfg.resolution, cfg.class_sampling_steps, cfg.class_seed)
    folder = Path(cache_root).expanduser() / key[:32]
    wanted = [folder / f"class_{i:04d}.png" for i in range(cfg.num_class_images)]
    missing = [i for i, p in enumerate(wanted) if not _readable_png(p)]
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
        _say(callbacks, f"prior preservation: rendering {len(missing)} class image(s) of '{cfg.class_prompt}' "
                        f"({cfg.num_class_images - len(missing)} cached)")
        with contextlib.ExitStack() as stack:
            render = generate or stack.enter_context(PipelineRenderer(base_model, device, cfg.mixed_precision))
            for done, i in enumerate(missing):
                if callbacks is not None and callbacks.should_stop and callbacks.should_stop():
                    raise TrainingCancelled(0, f"Cancelled while rendering class images ({done} of {len(missing)} "
                                               "made and cached); no training ran and no LoRA was written.")
                image = render(cfg.class_prompt, cfg.class_seed + i, cfg.resolution, cfg.resolution,
                               cfg.class_sampling_steps)
                write_png_atomic(wanted[i], image.convert("RGB"), overwrite=True)  # replaces a damaged one
                _write_manifest(folder, key, model_id, cfg)  # after each: a crash leaves it describing the folder
    elif not (folder / MANIFEST).is_file():
        _write_manifest(folder, key, model_id, cfg)
    log.info("prior preservation: %d class images in %s (%d rendered now)", len(wanted), folder, len(missing))
    return [Sample(p, cfg.class_prompt) for p in wanted]


def cache_key(model_id: str, class_prompt: str, resolution: int, steps: int, seed: int) -> str:
    parts = [CACHE_FORMAT, f"model={model_id}", f"prompt={class_prompt}", f"resolution={int(resolution)}",
             f"steps={int(steps)}", f"seed={int(seed)}", f"guidance={CLASS_GUIDANCE}", f"sampler={SAMPLER}"]
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def user_class_images(folder: Path, class_prompt: str, limit: int) -> list[Sample]:
    """The first `limit` pictures (sorted by path) under `folder`; nothing outside it, nothing hidden."""
    root = folder.expanduser()
    fix = (f"put pictures of '{class_prompt}' ({', '.join(IMAGE_EXTENSIONS)}) into it, or leave class_data_dir "
           "empty to render them with the base model")
    if not root.is_dir():
        raise DatasetError(f"class_data_dir '{root}' is not a folder. Fix: {fix}.")
    real_root = root.resolve()
    found: list[Path] = []
    for here, dirs, files in os.walk(root, followlinks=False):  # a symlinked folder is never entered
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX" and is_text(d))
        for name in files:
            path = Path(here) / name
            if name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            if not is_text(name):  # a name that is not UTF-8 could not be logged or recorded
                log.warning("class image %s: the name is not valid UTF-8 text; skipped. Fix: rename it", shown(path))
                continue
            if not path.resolve().is_relative_to(real_root):
                log.warning("class image %s links outside %s; skipped", path, root)
            elif _readable_image(path):
                found.append(path)
    found.sort()
    if not found:
        raise DatasetError(f"No usable class images in class_data_dir '{root}'. Fix: {fix}.")
    if len(found) < limit:
        log.info("class_data_dir holds %d usable pictures (num_class_images is %d); all are used, none rendered",
                 len(found), limit)
    return [Sample(p, class_prompt) for p in found[:limit]]


# ----------------------------------------------------------------- the default renderer
class PipelineRenderer:
    """Renders with a diffusers pipeline assembled from the already loaded models (no download).

    A context manager: on exit every model is back on its device and in its train/eval mode, since the
    trainer places the models itself afterwards. Weights keep their dtype (fp32 as loaded); on CUDA the
    UNet runs under autocast in the training precision, the VAE decodes outside it (pipeline.to_pictures). The prompt is encoded once per prompt and the text encoders go back at once.
    """

    def __init__(self, bm: BaseModel, device: torch.device | str, mixed_precision: str = "no"):
        self.bm, self.device = bm, torch.device(device)
        autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision)
        self.autocast = autocast if self.device.type == "cuda" else None
        self._embeds: dict[str, dict[str, torch.Tensor]] = {}

    def __enter__(self) -> "PipelineRenderer":
        bm = self.bm
        self._saved = [(m, _device_of(m), m.training) for m in (bm.unet, bm.vae, *bm.text_encoders)]
        self.pipe = build_pipeline(bm)
        try:
            for m, _, _ in self._saved:
                m.eval()  # dropout off: class pictures are inference, not training
            bm.unet.to(self.device)
            bm.vae.to(self.device)
        except BaseException:  # e.g. out of memory moving the VAE: put the UNet back too
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for m, device, training in self._saved:
            with contextlib.suppress(Exception):  # restoring one must not hide the error that got us here
                m.to(device)
            m.train(training)
        self.pipe = None
        self._embeds.clear()

    @torch.no_grad()
    def _encode(self, prompt: str) -> dict[str, torch.Tensor]:
        if prompt not in self._embeds:
            tes = self.bm.text_encoders
            homes = [_device_of(te) for te in tes]
            try:
                for te in tes:
                    te.to(self.device)
                out = self.pipe.encode_prompt(prompt, device=self.device, num_images_per_prompt=1,
                                              do_classifier_free_guidance=True)
            finally:
                for te, home in zip(tes, homes):  # only needed once: free the device for the UNet
                    te.to(home)
            names = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                     "negative_pooled_prompt_embeds")
            self._embeds[prompt] = dict(zip(names, out))
        return self._embeds[prompt]

    @torch.no_grad()
    def __call__(self, prompt: str, seed: int, width: int, height: int, steps: int) -> Image.Image:
        gen = seeded(seed)
        amp = torch.autocast(self.device.type, dtype=self.autocast) if self.autocast else contextlib.nullcontext()
        with amp:
            latents = self.pipe(**self._encode(prompt), height=height, width=width, num_inference_steps=steps,
                                guidance_scale=CLASS_GUIDANCE, generator=gen, output_type="latent").images
        return to_pictures(self.pipe, latents)[0]


# ----------------------------------------------------------------- files
def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def _readable_png(path: Path) -> bool:
    """A cached picture is reused only if it is a complete PNG (a crash mid-write never leaves one, a disk
    error might)."""
    if not path.is_file():
        return False
    try:
        with Image.open(path, formats=["PNG"]) as im:
            im.verify()  # checks every chunk's CRC without decoding the pixels
        return True
    except Exception as e:
        log.warning("cached class image %s is damaged (%s); rendering it again", path.name, e)
        return False


def _readable_image(path: Path) -> bool:
    try:
        with Image.open(path) as im:  # header only: cheap, and enough to reject non-images
            im.size
        return True
    except Exception as e:
        log.warning("class image %s is not a readable image (%s); skipped", path, e)
        return False


def _write_manifest(folder: Path, key: str, model_id: str, cfg: TrainConfig) -> None:
    images = sorted(p.name for p in folder.glob("class_[0-9][0-9][0-9][0-9].png"))
    manifest = {"format": CACHE_FORMAT, "key": key, "model_id": model_id, "class_prompt": cfg.class_prompt,
                "resolution": cfg.resolution, "sampling_steps": cfg.class_sampling_steps,
                "guidance_scale": CLASS_GUIDANCE, "sampler": SAMPLER,
                "images": [{"file": n, "seed": cfg.class_seed + int(n[6:10])} for n in images]}
    write_json_atomic(folder / MANIFEST, manifest, overwrite=True)


def _say(callbacks: Any, text: str) -> None:
    if callbacks is not None:
        callbacks.message(text)
    else:
        log.info(text)
