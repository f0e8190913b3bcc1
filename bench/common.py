"""Configurations, random-weight base models and generated datasets for the benchmark.

Nothing is downloaded: models are built from the config dicts in `trainer/models/configs/` with
random weights and the pack's byte-level CLIP vocabulary; images are drawn with PIL.
"""
from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_ROOT = REPO_ROOT / "trainer" / "models" / "configs"
GPU_DEFAULT_CONFIGS = "sd15-512-b1,sd15-512-b4,sdxl-1024-b1-gc"
CPU_DEFAULT_CONFIGS = "tiny-sd15-64-b1,tiny-sd15-64-b4,tiny-sdxl-64-b1"
# The guide's script for each family, inside a diffusers snapshot.
ANCHOR_PATHS = {"sd15": "examples/text_to_image/train_text_to_image_lora.py",
                "sdxl": "examples/text_to_image/train_text_to_image_lora_sdxl.py"}
CHAR_VOCAB = 514  # trainer.models.tokenizers.write_char_tokenizer: ids 0-511 bytes, 512 <|startoftext|>, 513 <|endoftext|>

_NAME = re.compile(r"^(?P<tiny>tiny-)?(?P<family>sd15|sdxl)-(?P<res>\d+)-b(?P<batch>\d+)(?P<gc>-gc)?$")


@dataclass(frozen=True)
class BenchConfig:
    name: str
    family: str  # sd15 | sdxl
    tiny: bool
    resolution: int
    batch: int
    gradient_checkpointing: bool

    @property
    def model_key(self) -> str:
        return ("tiny-" if self.tiny else "") + self.family

    def to_dict(self) -> dict:
        return asdict(self)


def parse_config(name: str) -> BenchConfig:
    """`[tiny-]{sd15|sdxl}-<resolution>-b<batch>[-gc]`, e.g. `sd15-512-b4`, `sdxl-1024-b1-gc`."""
    m = _NAME.match(name.strip())
    if not m:
        raise ValueError(f"bad configuration name {name!r}: use [tiny-]{{sd15|sdxl}}-<resolution>-b<batch>[-gc], "
                         "e.g. sd15-512-b4 or tiny-sdxl-64-b1")
    res, batch = int(m["res"]), int(m["batch"])
    if res % 8 or res < 32 or batch < 1:
        raise ValueError(f"{name}: resolution must be a multiple of 8 (>= 32) and batch >= 1")
    return BenchConfig(name.strip(), m["family"], bool(m["tiny"]), res, batch, bool(m["gc"]))


# ------------------------------------------------------------------ base models
def _config_root_for(key: str, work: Path) -> Path:
    """The pack's configs; for real-size models with the text encoders' vocabulary cut to the char tokenizer."""
    src = CONFIG_ROOT / key
    if key.startswith("tiny-"):
        return src
    dst = work / "configs" / key
    if dst.is_dir():
        return dst
    shutil.copytree(src, dst)
    for te in ("text_encoder", "text_encoder_2"):
        f = dst / te / "config.json"
        if f.is_file():
            cfg = json.loads(f.read_text())
            cfg.update(vocab_size=CHAR_VOCAB, bos_token_id=CHAR_VOCAB - 2, eos_token_id=CHAR_VOCAB - 1,
                       pad_token_id=CHAR_VOCAB - 1)
            f.write_text(json.dumps(cfg, indent=1))
    return dst


def build_model(cfg: BenchConfig, work: Path, device: str = "cpu") -> Path:
    """A diffusers folder with random weights (seeded), readable by both trainers offline. Cached in `work`."""
    import torch

    from trainer.models import build_tiny_model
    from trainer.models.tokenizers import load_clip_tokenizer

    out = work / "models" / cfg.model_key
    if (out / "model_index.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    root = _config_root_for(cfg.model_key, work)
    # Real-size weights are initialised on the GPU when there is one (SDXL's 2.6 B UNet takes a while on CPUs).
    with torch.device(device if device.startswith("cuda") else "cpu"):
        build_tiny_model(out, cfg.family, seed=0, config_root=root)
    (out / "model_index.json").write_text(json.dumps(model_index(cfg.family), indent=1))
    # The scripts load tokenizers with from_pretrained (SDXL: AutoTokenizer), which needs tokenizer_config.json
    # with model_max_length 77; pad tokens as the real SD1 / SDXL tokenizers.
    for sub, pad in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")):
        if (out / sub / "vocab.json").is_file():
            load_clip_tokenizer(out / sub, pad).save_pretrained(str(out / sub))
    return out


def model_index(family: str) -> dict:
    """A complete model_index.json: the SDXL script loads the whole pipeline after training."""
    import diffusers

    idx = {"_class_name": "StableDiffusionXLPipeline" if family == "sdxl" else "StableDiffusionPipeline",
           "_diffusers_version": diffusers.__version__,
           "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DConditionModel"],
           "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
           "tokenizer": ["transformers", "CLIPTokenizer"], "feature_extractor": [None, None],
           "image_encoder": [None, None]}
    if family == "sdxl":
        idx.update(text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
                   tokenizer_2=["transformers", "CLIPTokenizer"], force_zeros_for_empty_prompt=True)
    else:
        idx.update(safety_checker=[None, None], requires_safety_checker=False)
    return idx


# ------------------------------------------------------------------ dataset
_WORDS = ["red", "blue", "green", "yellow", "circle", "square", "stripes", "dots", "sky", "stone", "water", "glass"]


def make_dataset(folder: Path, n: int, resolution: int, seed: int = 0) -> Path:
    """`n` JPEG pictures (gradient, shapes, a little noise) + an imagefolder `metadata.jsonl` (file_name / text).

    Both trainers read this same folder: the guide's script through `datasets`' imagefolder, ours through
    its imagefolder convention. Cached by (n, resolution).
    """
    from trainer.atomic import atomic_folder

    folder = folder / f"data-{resolution}-{n}"
    if (folder / "metadata.jsonl").is_file():
        return folder
    try:
        with atomic_folder(folder, overwrite=False) as tmp:
            _draw_dataset(tmp, n, resolution, seed)
    except FileExistsError:  # another benchmark process made it meanwhile
        pass
    return folder


def _draw_dataset(tmp: Path, n: int, resolution: int, seed: int) -> None:
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    lines = []
    for i in range(n):
        c0 = tuple(rng.randrange(256) for _ in range(3))
        c1 = tuple(rng.randrange(256) for _ in range(3))
        grad = Image.linear_gradient("L").resize((resolution, resolution))
        img = Image.composite(Image.new("RGB", grad.size, c0), Image.new("RGB", grad.size, c1), grad)
        d = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = rng.randrange(resolution), rng.randrange(resolution)
            r = rng.randrange(max(2, resolution // 16), max(3, resolution // 3))
            box = [x0 - r, y0 - r, x0 + r, y0 + r]
            fill = tuple(rng.randrange(256) for _ in range(3))
            (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=fill)
        noise = Image.effect_noise((resolution, resolution), 24).convert("RGB")
        img = Image.blend(img, noise, 0.15)
        name = f"img_{i:03d}.jpg"
        img.save(tmp / name, quality=92)
        text = "a picture of " + " ".join(rng.sample(_WORDS, 3))
        lines.append(json.dumps({"file_name": name, "text": text}))
    (tmp / "metadata.jsonl").write_text("\n".join(lines) + "\n")
