"""The training step and loop. Progress, cancel and previews cross to the caller as plain callbacks.

One optimizer step, in order: draw noise and timesteps → noise the cached latents → predict →
weight the loss (min-SNR-γ) → backward (accumulated) → clip → step → schedule. Every random
draw comes from one seeded generator, so a run is repeatable and RNG state outside the run
(ComfyUI's) is left as it was.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from .config import TrainConfig
from .encode import Item, encode_tokens
from .errors import TrainingCancelled, TrainingFailed
from .lora import AdapterSpec, adapter_state_dict, inject
from .models import BaseModel

log = logging.getLogger("lora_studio.loop")


@dataclass
class StepInfo:
    step: int  # optimizer steps done
    total: int
    loss: float
    lr: float
    elapsed_s: float
    eta_s: float


@dataclass
class Callbacks:
    """All optional. `should_stop` is polled between micro-batches; `on_step` after each optimizer step."""

    on_step: Callable[[StepInfo], None] | None = None
    should_stop: Callable[[], bool] | None = None
    on_message: Callable[[str], None] | None = None

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
    extra: dict = field(default_factory=dict)


def weight_dtype(mixed_precision: str) -> torch.dtype:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)


class Trainer:
    """Holds the models with adapters, the optimizer and the data order for one run."""

    def __init__(self, cfg: TrainConfig, bm: BaseModel, items: list[Item], accelerator, callbacks: Callbacks):
        self.cfg, self.bm, self.items, self.acc, self.cb = cfg, bm, items, accelerator, callbacks
        self.device = accelerator.device
        self.dtype = weight_dtype(cfg.mixed_precision)
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.order_gen = torch.Generator().manual_seed(cfg.seed)  # data order stays on the CPU
        self.train_te = cfg.train_text_encoder
        self._setup_models()
        self._setup_optimizer()
        self._batches = self._batch_stream()

    # ------------------------------------------------------------ setup
    def _setup_models(self) -> None:
        cfg, bm = self.cfg, self.bm
        # LoRA weights start from the run's seed, not from whatever the global RNG holds.
        torch.manual_seed(cfg.seed)
        bm.unet.to(self.device, dtype=self.dtype)
        self.unet_params = inject(bm.unet, AdapterSpec(cfg.rank, cfg.alpha, tuple(cfg.unet_target_modules),
                                                       cfg.lora_dropout))
        self.te_params: list[torch.nn.Parameter] = []
        if self.train_te:
            for te in bm.text_encoders:
                te.to(self.device, dtype=self.dtype)
                self.te_params += inject(te, AdapterSpec(cfg.rank, cfg.alpha,
                                                         tuple(cfg.text_encoder_target_modules), cfg.lora_dropout))
                if cfg.gradient_checkpointing:
                    te.gradient_checkpointing_enable()
                te.train()
        # Only the adapter trains, so only it is kept in fp32: optimizer updates in bf16 lose small steps.
        for p in self.unet_params + self.te_params:
            p.data = p.data.float()
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
        if self.device.type == "cuda":
            kw["fused"] = True  # one kernel for all adapter tensors instead of one per tensor
        self.optimizer = torch.optim.AdamW(groups, **kw)
        self.lr_scheduler = get_scheduler(cfg.lr_scheduler, self.optimizer, num_warmup_steps=cfg.lr_warmup_steps,
                                          num_training_steps=cfg.max_train_steps, num_cycles=cfg.lr_num_cycles,
                                          power=cfg.lr_power)
        models = [self.bm.unet] + (list(self.bm.text_encoders) if self.train_te else [])
        prepared = self.acc.prepare(*models, self.optimizer)
        self.models, self.optimizer = list(prepared[:-1]), prepared[-1]

    # ------------------------------------------------------------ data order
    def _batch_stream(self):
        """Endless batches of item indices for this process. Each batch holds one training size only.

        Every process draws the same global order (same seed) and takes its own slice, so the global
        batch is the same whatever the number of processes.
        """
        per_proc, procs, rank = self.cfg.train_batch_size, self.acc.num_processes, self.acc.process_index
        glob = per_proc * procs
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, it in enumerate(self.items):
            by_size.setdefault(it.size, []).append(i)
        while True:
            batches = []
            for idx in by_size.values():
                perm = [idx[j] for j in torch.randperm(len(idx), generator=self.order_gen).tolist()]
                n = math.ceil(len(perm) / glob) * glob
                perm = (perm * math.ceil(n / len(perm)))[:n]  # top up from the same size group
                batches += [perm[k:k + glob] for k in range(0, n, glob)]
            for b in torch.randperm(len(batches), generator=self.order_gen).tolist():
                yield batches[b][rank * per_proc:(rank + 1) * per_proc]

    def _collate(self, idx: list[int]):
        items = [self.items[i] for i in idx]
        latents = torch.stack([it.latent for it in items]).to(self.device, non_blocking=True)
        ids = [torch.stack([it.input_ids[k] for it in items]) for k in range(len(items[0].input_ids))]
        embeds = torch.stack([it.embeds for it in items]) if items[0].embeds is not None else None
        pooled = torch.stack([it.pooled for it in items]) if items[0].pooled is not None else None
        time_ids = torch.stack([it.time_ids for it in items]) if items[0].time_ids is not None else None
        return latents, ids, embeds, pooled, time_ids

    # ------------------------------------------------------------ the step
    def _conditioning(self, ids, embeds, pooled, time_ids):
        if embeds is None:  # text encoders train: run them, with grad
            embeds, pooled = encode_tokens(self.bm, ids, self.models[1:])
        embeds = embeds.to(self.device, dtype=self.dtype)
        added = None
        if self.bm.family == "sdxl":
            added = {"text_embeds": pooled.to(self.device, dtype=self.dtype),
                     "time_ids": time_ids.to(self.device, dtype=self.dtype)}
        return embeds, added

    def loss(self, latents, ids, embeds, pooled, time_ids, noise=None, timesteps=None, snr_weighting=True):
        sched = self.bm.scheduler
        latents = latents.float()
        if noise is None:
            noise = torch.randn(latents.shape, generator=self.gen, device=self.device)
            if self.cfg.noise_offset:
                # shifts the mean per channel so the model can learn very dark / bright images
                noise += self.cfg.noise_offset * torch.randn((latents.shape[0], latents.shape[1], 1, 1),
                                                             generator=self.gen, device=self.device)
        if timesteps is None:
            timesteps = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],),
                                      generator=self.gen, device=self.device)
        noisy = sched.add_noise(latents, noise, timesteps)
        target = noise if self.bm.prediction_type == "epsilon" else sched.get_velocity(latents, noise, timesteps)
        with self.acc.autocast():
            embeds, added = self._conditioning(ids, embeds, pooled, time_ids)
            pred = self.models[0](noisy.to(self.dtype), timesteps, embeds, added_cond_kwargs=added).sample
        per_sample = F.mse_loss(pred.float(), target, reduction="none").mean(dim=(1, 2, 3))
        if snr_weighting and self.cfg.snr_gamma > 0:
            from diffusers.training_utils import compute_snr

            # min-SNR-γ (Hang et al. 2023): easy, low-noise steps stop dominating the gradient
            snr = compute_snr(sched, timesteps)
            w = torch.clamp(snr, max=self.cfg.snr_gamma)
            w = w / (snr + 1) if self.bm.prediction_type == "v_prediction" else w / snr
            per_sample = per_sample * w
        return per_sample.mean()

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def eval_loss(self, n: int = 8) -> float:
        """Unweighted loss on fixed (item, noise, timestep) triples: comparable before and after training."""
        g = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 7919)
        idx = list(range(min(n, len(self.items))))
        T = self.bm.scheduler.config.num_train_timesteps
        total = 0.0
        for k, i in enumerate(idx):
            lat, ids, emb, pooled, tids = self._collate([i])
            noise = torch.randn(lat.shape, generator=g, device=self.device)
            t = torch.tensor([int((k + 0.5) * T / len(idx))], device=self.device)  # spread over the schedule
            total += float(self.loss(lat, ids, emb, pooled, tids, noise, t, snr_weighting=False))
        return total / len(idx)

    # ------------------------------------------------------------ the loop
    def _stop_requested(self) -> bool:
        return bool(self.cb.should_stop and self.cb.should_stop())

    def run(self) -> TrainResult:
        cfg, acc = self.cfg, self.acc
        total = cfg.max_train_steps
        eval_before = self.eval_loss()
        losses, lrs = [], []
        t0 = time.perf_counter()
        first_step_s = 0.0
        params = self.unet_params + self.te_params
        for step in range(1, total + 1):
            step_loss = 0.0
            for _ in range(cfg.gradient_accumulation_steps):
                if self._stop_requested():
                    raise TrainingCancelled(step - 1)
                batch = self._collate(next(self._batches))
                with acc.accumulate(*self.models):
                    loss = self.loss(*batch)
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.max_grad_norm > 0:
                        acc.clip_grad_norm_(params, cfg.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                step_loss += loss.detach().float() / cfg.gradient_accumulation_steps
            lr = self.lr_scheduler.get_last_lr()[0]
            self.lr_scheduler.step()
            value = float(acc.reduce(step_loss, reduction="mean")) if acc.num_processes > 1 else float(step_loss)
            if not math.isfinite(value):
                hint = " Mixed precision fp16 overflows easily: use bf16 or 'no'." if cfg.mixed_precision == "fp16" else ""
                raise TrainingFailed(f"The loss became {value} at step {step}; training stopped and no LoRA was "
                                     f"written. Fix: lower learning_rate (now {cfg.learning_rate:g}).{hint}")
            losses.append(value)
            lrs.append(lr)
            elapsed = time.perf_counter() - t0
            if step == 1:
                first_step_s = elapsed
            if self.cb.on_step:
                self.cb.on_step(StepInfo(step, total, value, lr, elapsed, elapsed / step * (total - step)))
        seconds = time.perf_counter() - t0
        eval_after = self.eval_loss()
        return TrainResult(
            unet_lora=adapter_state_dict(acc.unwrap_model(self.models[0])),
            text_encoder_loras=[adapter_state_dict(acc.unwrap_model(m)) for m in self.models[1:]],
            losses=losses, lrs=lrs, steps=total, eval_loss_before=eval_before, eval_loss_after=eval_after,
            seconds=seconds, first_step_s=first_step_s)
