"""The training step and loop. Progress, cancel and previews cross to the caller as plain callbacks.

One optimizer step, in order: draw noise and timesteps → noise the cached latents → predict →
weight the loss (min-SNR-γ) → backward (accumulated) → clip → step → schedule. Every random draw
comes from one seeded generator, and the data order is a function of (seed, epoch), so a run is
repeatable, resumable bit for bit, and the same on one process or several.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .config import TrainConfig
from .data import augment_caption
from .data.captions import apply_caption_dropout
from .encode import Item, ItemEncoder, encode_tokens, tokenize
from .errors import TrainingCancelled, TrainingFailed
from .fused_lora import AdapterCast
from .lora import AdapterSpec, adapter_state_dict, inject, load_adapter_state_dict
from .models import BaseModel
from .readback import StepScalars

log = logging.getLogger("lora_studio.loop")
ITEMS_ON_DEVICE_BYTES = 2 << 30  # cached examples up to this size live on the GPU; above, in pinned host memory


@dataclass
class StepInfo:
    step: int  # optimizer steps done
    total: int
    loss: float
    lr: float
    elapsed_s: float
    eta_s: float
    extra: dict[str, float] = field(default_factory=dict)  # e.g. instance_loss / prior_loss


@dataclass
class Callbacks:
    """All optional. `should_stop` is polled before every micro-batch; `on_step` after each optimizer step;
    `on_preview(step, images, prompts, negative)` when preview images are ready."""

    on_step: Callable[[StepInfo], None] | None = None
    should_stop: Callable[[], bool] | None = None
    on_message: Callable[[str], None] | None = None
    on_preview: Callable[[int, list, list, str], None] | None = None

    def message(self, text: str) -> None:
        log.info(text)
        if self.on_message:
            self.on_message(text)


@dataclass
class TrainResult:
    unet_lora: dict[str, torch.Tensor]
    text_encoder_loras: list[dict[str, torch.Tensor]]
    losses: list[float]
    lrs: list[float]
    steps: int
    eval_loss_before: float
    eval_loss_after: float
    seconds: float
    first_step_s: float
    resumed_from: int = 0
    loop_started: float = 0.0  # perf_counter() when the first step began
    extra: dict = field(default_factory=dict)


def weight_dtype(mixed_precision: str) -> torch.dtype:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e))


class Trainer:
    """Holds the models with adapters, the optimizer and the data order for one run."""

    def __init__(self, cfg: TrainConfig, bm: BaseModel, items: list[Item], accelerator, callbacks: Callbacks,
                 prior_items: list[Item] | None = None, checkpointer: Callable[[int], Any] | None = None,
                 previewer: Callable[[int], None] | None = None, encoder: ItemEncoder | None = None):
        self.cfg, self.bm, self.items, self.acc, self.cb = cfg, bm, items, accelerator, callbacks
        self.prior_items = prior_items or []
        self.encoder = encoder  # encodes items on first use; None: every item arrives encoded
        self.checkpointer, self.previewer = checkpointer, previewer
        self.device = accelerator.device
        self.dtype = weight_dtype(cfg.mixed_precision)
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.caption_aug = cfg.caption_dropout > 0 or cfg.shuffle_tags
        self._empty_cond = None  # (embeds, pooled) of "": caption dropout on cached text embeddings
        self.caption_gen = torch.Generator().manual_seed(cfg.seed + 17)  # caption dropout / tag shuffling
        self.train_te = cfg.train_text_encoder
        self.step = 0
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self.loss_terms: dict[str, list[float]] = {}  # per step, e.g. instance_loss / prior_loss
        self.eval_before: float | None = None
        self.position = {"items": (0, 0), "prior": (0, 0)}  # (epoch, batch index) per stream
        self._epoch_memo: dict[str, tuple[int, list[list[int]]]] = {}
        self._setup_models()
        self._setup_optimizer()
        self._place_items()
        self._setup_compile()

    # ------------------------------------------------------------ setup
    def _setup_models(self) -> None:
        cfg, bm = self.cfg, self.bm
        torch.manual_seed(cfg.seed)  # LoRA init draws from the global RNG; the caller's RNG is forked around us
        torch.nn.Module.to(bm.unet, self.device, dtype=self.dtype)  # (diffusers' .to warns on every cast)
        spec = AdapterSpec(cfg.rank, cfg.alpha, tuple(cfg.unet_target_modules), cfg.lora_dropout)
        self.unet_params = inject(bm.unet, spec)
        self.te_params: list[torch.nn.Parameter] = []
        if self.train_te:
            te_spec = AdapterSpec(cfg.rank, cfg.alpha, tuple(cfg.text_encoder_target_modules), cfg.lora_dropout)
            for te in bm.text_encoders:
                te.to(self.device, dtype=self.dtype)
                self.te_params += inject(te, te_spec)
                if cfg.gradient_checkpointing:
                    # transformers 5 renamed it and warns on every run under the old name
                    enable = getattr(te, "activation_checkpointing_enable", None) or te.gradient_checkpointing_enable
                    enable()
                te.train()
        # Only the adapter trains, so only it is kept in fp32: optimizer updates in bf16 lose small steps.
        from diffusers.training_utils import cast_training_params

        trained = [bm.unet] + (list(bm.text_encoders) if self.train_te else [])
        cast_training_params(trained, dtype=torch.float32)  # the parameters with requires_grad: the adapter's
        self.adapter_cast = AdapterCast(trained)
        if cfg.gradient_checkpointing:
            bm.unet.enable_gradient_checkpointing()
        bm.unet.train()

    def _setup_optimizer(self) -> None:
        from diffusers.optimization import get_scheduler

        cfg = self.cfg
        groups = [{"params": self.unet_params, "lr": cfg.learning_rate}]
        if self.te_params:
            groups.append({"params": self.te_params, "lr": cfg.text_encoder_lr})
        kw = dict(betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)
        if self.device.type in ("cuda", "cpu"):
            kw["fused"] = True  # one kernel for all adapter tensors instead of several per tensor
        self.optimizer = torch.optim.AdamW(groups, **kw)
        self.lr_scheduler = get_scheduler(cfg.lr_scheduler, self.optimizer, num_warmup_steps=cfg.lr_warmup_steps,
                                          num_training_steps=cfg.max_train_steps, num_cycles=cfg.lr_num_cycles,
                                          power=cfg.lr_power)
        models = [self.bm.unet] + (list(self.bm.text_encoders) if self.train_te else [])
        prepared = self.acc.prepare(*models, self.optimizer)
        self.models, self.optimizer = list(prepared[:-1]), prepared[-1]

    def _setup_compile(self) -> None:
        from .speed import UnetCaller, cache_dir, compile_unet, decide

        cfg = self.cfg
        root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else Path(cfg.jobs_dir).expanduser().parent / "cache"
        cache = cache_dir(root)
        on, why = decide(cfg.compile, self.device, cfg.max_train_steps,
                         cfg.train_batch_size * cfg.gradient_accumulation_steps, cache)
        self.compile_note = why
        compiled = None
        if on:
            try:
                compiled = compile_unet(self.models[0], self.device, cache)
            except Exception as e:  # noqa: BLE001 - e.g. torch built without dynamo support
                why = f"{why}; torch.compile unavailable ({e.__class__.__name__}: {e}), training eager"
                self.compile_note = why
        self.cb.message(why)
        self.unet_call = UnetCaller(self.models[0], compiled, self.cb.message)

    def _place_items(self) -> None:
        """Cached latents and embeddings go to the device once (the text already in the compute dtype), so a
        step reads them without a host-to-device copy; a dataset too big for that stays in pinned memory
        and is copied with non_blocking. Items encoded on first use are placed as they are encoded. With
        caption dropout on cached text, the empty caption's embedding is computed once here instead of
        running the text encoder every step."""
        self._on_device: bool | None = None
        every = {id(it): it for it in self.items + self.prior_items}
        self._unique_items = len(every)
        self._place([it for it in every.values() if it.encoded])
        cache_text = not (self.cfg.train_text_encoder or self.cfg.shuffle_tags)
        if self.cfg.caption_dropout > 0 and cache_text and self.items:
            with torch.no_grad():
                embeds, pooled = encode_tokens(self.bm, tokenize(self.bm, [""]))
            self._empty_cond = (self._move(embeds[0], self.dtype),
                                self._move(pooled[0], self.dtype) if pooled is not None else None)

    def _move(self, t, dtype=None):
        if t is None:
            return None
        if self._on_device is not False:  # (undecided: only the empty caption's embedding, before any item)
            return t.to(self.device, dtype=dtype)
        t = t.to(dtype) if dtype is not None else t
        return t.pin_memory() if self.device.type == "cuda" else t

    def _place(self, items: list[Item]) -> None:
        if not items:
            return
        if self._on_device is None:  # decided on the first items placed, for the whole dataset
            first = items[0]
            size = sum(t.numel() * t.element_size() for t in (first.latent, first.embeds, first.pooled, first.time_ids)
                       if t is not None) * self._unique_items
            self._on_device = self.device.type == "cpu" or size <= ITEMS_ON_DEVICE_BYTES
        for it in items:
            it.latent = self._move(it.latent)
            it.embeds, it.pooled = self._move(it.embeds, self.dtype), self._move(it.pooled, self.dtype)
            it.time_ids = self._move(it.time_ids, self.dtype)

    def _ensure(self, items: list[Item]) -> None:
        """Encode (and place) the items of a batch that are not encoded yet: the first epoch's steps pay for
        their own pictures, instead of the user waiting for the whole dataset before step 1."""
        if self.encoder is not None:
            self._place(self.encoder.ensure(items))

    # ------------------------------------------------------------ data order
    def _epoch_batches(self, items: list[Item], epoch: int) -> list[list[int]]:
        """Global batches of one epoch, each of one training size. A pure function of (seed, epoch)."""
        glob = self.cfg.train_batch_size * self.acc.num_processes
        g = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, it in enumerate(items):
            by_size.setdefault(it.size, []).append(i)
        batches = []
        for idx in by_size.values():
            perm = [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]
            n = math.ceil(len(perm) / glob) * glob
            perm = (perm * math.ceil(n / len(perm)))[:n]  # top up from the same size group
            batches += [perm[k:k + glob] for k in range(0, n, glob)]
        return [batches[b] for b in torch.randperm(len(batches), generator=g).tolist()]

    def _batches_of(self, stream: str, items: list[Item], epoch: int) -> list[list[int]]:
        """The epoch's batches, computed once per epoch rather than once per micro-batch."""
        memo = self._epoch_memo.get(stream)
        if memo is None or memo[0] != epoch:
            memo = self._epoch_memo[stream] = (epoch, self._epoch_batches(items, epoch))
        return memo[1]

    def _next_batch(self, stream: str) -> list[int]:
        """This process's share of the next global batch; advances the stream's (epoch, index)."""
        items = self.items if stream == "items" else self.prior_items
        epoch, pos = self.position[stream]
        batches = self._batches_of(stream, items, epoch)
        if pos >= len(batches):
            epoch, pos = epoch + 1, 0
            batches = self._batches_of(stream, items, epoch)
        self.position[stream] = (epoch, pos + 1)
        per, rank = self.cfg.train_batch_size, self.acc.process_index
        return batches[pos][rank * per:(rank + 1) * per]

    def _batch(self, tensors: list[torch.Tensor | None]) -> torch.Tensor | None:
        if tensors[0] is None:
            return None
        # one example: a view, no kernel; several: one stack
        t = tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)
        return t.to(self.device, non_blocking=True)  # a no-op when the items live on the device

    def _collate(self, items: list[Item], idx: list[int], augment: bool = False):
        chosen = [items[i] for i in idx]
        self._ensure(chosen)
        latents = self._batch([it.latent for it in chosen])
        ids = None
        embeds = [it.embeds for it in chosen]
        pooled = [it.pooled for it in chosen]
        if augment and self._empty_cond is not None:  # caption dropout only, on cached embeddings
            for j, it in enumerate(chosen):
                if apply_caption_dropout(it.caption, self.cfg.caption_dropout, self.caption_gen) == "":
                    embeds[j], pooled[j] = self._empty_cond
        elif augment and self.caption_aug:
            c = self.cfg
            captions = [augment_caption(it.caption, self.caption_gen, dropout=c.caption_dropout, shuffle=c.shuffle_tags,
                                        keep_tags=c.keep_tags) for it in chosen]
            ids = tokenize(self.bm, captions)
        if ids is None and embeds[0] is None:
            ids = [torch.stack([it.input_ids[k] for it in chosen]) for k in range(len(chosen[0].input_ids))]
        if ids is not None:
            embeds, pooled = [None], [None]
        return latents, ids, self._batch(embeds), self._batch(pooled), self._batch([it.time_ids for it in chosen])

    # ------------------------------------------------------------ the step
    def _conditioning(self, ids, embeds, pooled, time_ids):
        if embeds is None:  # text not cached: the encoders train (with grad) or the captions vary per step
            if self.train_te:
                embeds, pooled = encode_tokens(self.bm, ids, self.models[1:])
            else:
                with torch.no_grad():
                    embeds, pooled = encode_tokens(self.bm, ids)
        embeds = embeds.to(self.device, dtype=self.dtype)
        added = None
        if self.bm.family == "sdxl":
            added = {"text_embeds": pooled.to(self.device, dtype=self.dtype),
                     "time_ids": time_ids.to(self.device, dtype=self.dtype)}
        return embeds, added

    def _draw(self, shape) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise and timesteps for the GLOBAL batch, then this process's slice: every process draws the
        same numbers, so the generator stays in step and N processes see what one process would."""
        b, procs, rank = shape[0], self.acc.num_processes, self.acc.process_index
        full = (b * procs, *shape[1:])
        noise = torch.randn(full, generator=self.gen, device=self.device)
        if self.cfg.noise_offset:
            # shifts the mean per channel so the model can learn very dark / bright images
            noise += self.cfg.noise_offset * torch.randn((full[0], full[1], 1, 1), generator=self.gen,
                                                         device=self.device)
        t = torch.randint(0, self.bm.scheduler.config.num_train_timesteps, (full[0],), generator=self.gen,
                          device=self.device)
        return noise[rank * b:(rank + 1) * b], t[rank * b:(rank + 1) * b]

    def loss(self, latents, ids, embeds, pooled, time_ids, noise=None, timesteps=None, snr_weighting=True):
        sched = self.bm.scheduler
        latents = latents.float()
        if noise is None:
            noise, timesteps = self._draw(latents.shape)
        noisy = sched.add_noise(latents, noise, timesteps)
        target = noise if self.bm.prediction_type == "epsilon" else sched.get_velocity(latents, noise, timesteps)
        with self.acc.autocast():
            embeds, added = self._conditioning(ids, embeds, pooled, time_ids)
            # the held-out loss (no grad, 8 forwards) runs eager: compiling its inference graph too would double
            # the compile time for nothing
            unet = self.unet_call if torch.is_grad_enabled() else self.models[0]
            pred = unet(noisy.to(self.dtype), timesteps, embeds, added_cond_kwargs=added).sample
        per_sample = F.mse_loss(pred.float(), target, reduction="none").mean(dim=(1, 2, 3))
        if snr_weighting and self.cfg.snr_gamma > 0:
            from diffusers.training_utils import compute_snr

            # min-SNR-γ (Hang et al. 2023): easy, low-noise steps stop dominating the gradient
            snr = compute_snr(sched, timesteps)
            w = torch.clamp(snr, max=self.cfg.snr_gamma)
            w = w / (snr + 1) if self.bm.prediction_type == "v_prediction" else w / snr
            per_sample = per_sample * w
        return per_sample.mean()

    def _micro_step(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = self.loss(*self._collate(self.items, self._next_batch("items"), augment=True))
        if not self.prior_items:
            return loss, {}
        # DreamBooth prior preservation: the class images keep the model's idea of the class intact
        prior = self.loss(*self._collate(self.prior_items, self._next_batch("prior")))
        return loss + self.cfg.prior_loss_weight * prior, {"instance_loss": loss.detach(), "prior_loss": prior.detach()}

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def eval_loss(self, n: int = 8) -> float:
        """Unweighted loss on fixed (item, noise, timestep) triples: comparable before and after training.

        One forward per training size (usually one in all) instead of one per item: before the first step
        this runs while the user waits, and eight separate full-size forwards cost seconds."""
        g = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 7919)
        idx = list(range(min(n, len(self.items))))
        self._ensure([self.items[i] for i in idx])
        T = self.bm.scheduler.config.num_train_timesteps
        noise = [torch.randn((1, *self.items[i].latent.shape), generator=g, device=self.device) for i in idx]
        steps = [int((k + 0.5) * T / len(idx)) for k in range(len(idx))]  # spread over the schedule
        by_size: dict[tuple[int, int], list[int]] = {}
        for k, i in enumerate(idx):
            by_size.setdefault(self.items[i].size, []).append(k)
        total = 0.0
        self.adapter_cast.begin()
        for ks in by_size.values():
            lat, ids, emb, pooled, tids = self._collate(self.items, [idx[k] for k in ks])
            t = torch.tensor([steps[k] for k in ks], device=self.device)
            total += float(self.loss(lat, ids, emb, pooled, tids, torch.cat([noise[k] for k in ks]), t,
                                     snr_weighting=False)) * len(ks)
        self.adapter_cast.end()
        return total / len(idx)

    @torch.no_grad()
    def eval_loss_base(self, n: int = 8) -> float:
        """`eval_loss` of the models with every adapter switched off: the held-out loss "before training".

        LoRA's B starts at zero (`init_lora_weights="gaussian"` zeroes B), so the untrained adapted model IS
        the base model and this equals `eval_loss()` before step 1 (tests/test_training.py checks it). It is
        computed after training instead of before it, so the user does not wait for eight forwards before
        the first step (issue #12, time to first step). peft's own switch (`enable_adapters`), which the
        fused layer honours by falling back to peft's forward."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        layers = [m for model in self.models for m in model.modules() if isinstance(m, BaseTunerLayer)]
        grads = [(p, p.requires_grad) for p in self.unet_params + self.te_params]
        for layer in layers:
            layer.enable_adapters(False)
        try:
            return self.eval_loss(n)
        finally:
            for layer in layers:
                layer.enable_adapters(True)
            for p, g in grads:  # enable_adapters touches requires_grad: put back exactly what trained
                p.requires_grad_(g)

    # ------------------------------------------------------------ checkpoint state
    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"unet.{k}": v for k, v in adapter_state_dict(self.acc.unwrap_model(self.models[0])).items()}
        for i, m in enumerate(self.models[1:]):
            out.update({f"te{i}.{k}": v for k, v in adapter_state_dict(self.acc.unwrap_model(m)).items()})
        return out

    def state(self) -> tuple[dict, dict, dict]:
        optim = {"optimizer": self.optimizer.state_dict(), "lr_scheduler": self.lr_scheduler.state_dict()}
        if getattr(self.acc, "scaler", None) is not None:
            optim["scaler"] = self.acc.scaler.state_dict()
        rng = {"noise": self.gen.get_state(), "torch": torch.get_rng_state(), "captions": self.caption_gen.get_state()}
        meta = {"position": {k: list(v) for k, v in self.position.items()}, "losses": self.losses, "lrs": self.lrs,
                "loss_terms": self.loss_terms, "eval_loss_before": self.eval_before}
        return optim, rng, meta

    def restore(self, tensors: dict[str, torch.Tensor], optim: dict, rng: dict, meta: dict, step: int) -> None:
        parts = [("unet.", self.models[0])] + [(f"te{i}.", m) for i, m in enumerate(self.models[1:])]
        for prefix, m in parts:
            sub = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            load_adapter_state_dict(self.acc.unwrap_model(m), sub)
        self.optimizer.load_state_dict(optim["optimizer"])
        self.lr_scheduler.load_state_dict(optim["lr_scheduler"])
        if "scaler" in optim and getattr(self.acc, "scaler", None) is not None:
            self.acc.scaler.load_state_dict(optim["scaler"])
        self.gen.set_state(rng["noise"].to(self.gen.get_state().device))
        torch.set_rng_state(rng["torch"])
        self.caption_gen.set_state(rng["captions"])
        self.position = {k: tuple(v) for k, v in meta["position"].items()}
        self.losses, self.lrs = list(meta["losses"]), list(meta["lrs"])
        self.loss_terms = {k: list(v) for k, v in meta.get("loss_terms", {}).items()}
        self.eval_before = meta.get("eval_loss_before")
        self.step = step

    # ------------------------------------------------------------ the loop
    def _stop_requested(self) -> bool:
        return bool(self.cb.should_stop and self.cb.should_stop())

    def _checkpoint(self) -> None:
        if self.checkpointer and self.step > 0:
            self.checkpointer(self.step)

    def _oom_message(self) -> str:
        c = self.cfg
        advice = []
        if c.train_batch_size > 1:
            advice.append(f"train_batch_size {c.train_batch_size} → {max(1, c.train_batch_size // 2)} (raise "
                          "gradient_accumulation_steps to keep the effective batch)")
        if not c.gradient_checkpointing:
            advice.append("gradient_checkpointing on (about 30 % slower, much less memory)")
        if c.resolution > 512:
            advice.append(f"resolution {c.resolution} → {max(256, c.resolution - 256)}")
        if c.train_text_encoder:
            advice.append("train_text_encoder off")
        if not advice:
            advice.append("mixed_precision bf16/fp16, or close other programs using the GPU")
        return (f"Out of GPU memory at step {self.step + 1} (resolution {c.resolution}, batch {c.train_batch_size}, "
                f"gradient checkpointing {'on' if c.gradient_checkpointing else 'off'}). Training stopped and memory "
                f"was freed; the last checkpoint is kept. Fix: " + "; ".join(advice) + ".")

    def _optimizer_step(self, params) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimizer step over gradient_accumulation_steps micro-batches; the loss stays on the device."""
        cfg, acc, total = self.cfg, self.acc, self.cfg.max_train_steps
        step_loss = None
        extras: dict[str, torch.Tensor] = {}
        n = cfg.gradient_accumulation_steps
        for _ in range(n):
            if self._stop_requested():
                raise TrainingCancelled(self.step, (
                    f"Training was cancelled after step {self.step} of {total}; no LoRA was written. "
                    + ("A checkpoint of this step was kept: queue the same job again (Train LoRA's resume: "
                       "auto) or run it with --set resume_from=latest to continue." if self.step else "")))
            with acc.accumulate(*self.models):
                self.adapter_cast.begin()  # fp32 masters → compute dtype, once for this forward/backward
                try:
                    loss, parts = self._micro_step()
                    acc.backward(loss)
                finally:
                    self.adapter_cast.end()
                if acc.sync_gradients and cfg.max_grad_norm > 0:
                    acc.clip_grad_norm_(params, cfg.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            part = loss.detach().float() if n == 1 else loss.detach().float() / n
            step_loss = part if step_loss is None else step_loss + part
            for k, v in parts.items():
                extras[k] = v.float() / n if k not in extras else extras[k] + v.float() / n
        if acc.num_processes > 1:
            step_loss = acc.reduce(step_loss, reduction="mean")
            extras = {k: acc.reduce(v, reduction="mean") for k, v in extras.items()}
        return step_loss, extras

    def _report(self, step: int, values: dict[str, float], resumed_from: int, t0: float) -> None:
        """A step's loss reached the host: check it, record it, tell the caller."""
        cfg = self.cfg
        value = values.pop("loss")
        if not math.isfinite(value):
            hint = " Mixed precision fp16 overflows easily: use bf16 or 'no'." if cfg.mixed_precision == "fp16" else ""
            raise TrainingFailed(f"The loss became {value} at step {step}; training stopped at once and "
                                 f"no LoRA was written (the last good checkpoint is kept). Fix: lower "
                                 f"learning_rate (now {cfg.learning_rate:g}).{hint}")
        lr = self._lr_at.pop(step)
        self.losses.append(value)
        self.lrs.append(lr)
        for k, v in values.items():
            self.loss_terms.setdefault(k, []).append(v)
        elapsed = time.perf_counter() - t0
        if step == resumed_from + 1:
            self._first_step_s = elapsed
        if self.cb.on_step:
            done = step - resumed_from
            self.cb.on_step(StepInfo(step, cfg.max_train_steps, value, lr, elapsed,
                                     elapsed / done * (cfg.max_train_steps - step), values))

    def _drain(self, resumed_from: int, t0: float, wait: bool = False) -> None:
        for step, values in self.readback.ready(wait):
            self._report(step, values, resumed_from, t0)

    def run(self) -> TrainResult:
        """The steps left (all, or the rest after `restore`), then the held-out loss, the last preview, the result."""
        resumed_from, t0 = self.step, time.perf_counter()
        self._first_step_s = 0.0
        self.readback = StepScalars(self.device)
        self._lr_at: dict[int, float] = {}
        try:
            self._steps(resumed_from, t0)
        except TrainingCancelled:
            self._drain(resumed_from, t0, wait=True)
            self._checkpoint()  # Cancel keeps the work: "resume" continues from here
            raise
        except BaseException as e:
            if _is_oom(e):
                self.optimizer.zero_grad(set_to_none=True)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                raise TrainingFailed(self._oom_message()) from None
            raise
        return self._result(resumed_from, t0, time.perf_counter() - t0)

    def _steps(self, resumed_from: int, t0: float) -> None:
        cfg, total = self.cfg, self.cfg.max_train_steps
        params = self.unet_params + self.te_params
        while self.step < total:
            step_loss, extras = self._optimizer_step(params)
            self._lr_at[self.step + 1] = self.lr_scheduler.get_last_lr()[0]
            self.lr_scheduler.step()
            self.step += 1
            self.readback.push(self.step, {"loss": step_loss, **extras})
            save = self._due(cfg.checkpointing_steps)
            preview = self.previewer is not None and self._due(cfg.preview_every)
            # before anything is written, every loss so far must be known (and finite)
            self._drain(resumed_from, t0, wait=save or preview or self.step >= total)
            if save:
                self._checkpoint()
            if preview:
                self.previewer(self.step)

    def _due(self, every: int) -> bool:
        """A periodic checkpoint or preview falls on this step (the last step's come after the loop)."""
        return bool(every) and self.step % every == 0 and self.step < self.cfg.max_train_steps

    def _result(self, resumed_from: int, t0: float, seconds: float) -> TrainResult:
        eval_after = self.eval_loss()
        if self.eval_before is None:  # after training, with the adapters off: see eval_loss_base
            self.eval_before = self.eval_loss_base()
        if self.previewer:
            self.previewer(self.step)
        unwrap = self.acc.unwrap_model
        return TrainResult(
            unet_lora=adapter_state_dict(unwrap(self.models[0])),
            text_encoder_loras=[adapter_state_dict(unwrap(m)) for m in self.models[1:]],
            losses=self.losses, lrs=self.lrs, steps=self.step, eval_loss_before=self.eval_before,
            eval_loss_after=eval_after, seconds=seconds, first_step_s=self._first_step_s, resumed_from=resumed_from,
            loop_started=t0,
            extra={"loss_terms": self.loss_terms})
