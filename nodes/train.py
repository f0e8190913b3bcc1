"""TrainLoRA: runs the trainer in ComfyUI's process, with progress, loss points and Cancel."""
from __future__ import annotations

import logging

from ..trainer import TrainConfig, TrainingCancelled
from ..trainer.job import run_job
from ..trainer.loop import Callbacks
from .comfy_bridge import (CATEGORY, CONFIG_TYPE, DATASET_TYPE, LORA_TYPE, NodeReporter, confined, current_run,
                           free_comfy_memory, interrupt_exception, interrupted, studio_dir, tokenizer_dir)

log = logging.getLogger("lora_studio.nodes")


def apply_lora(model, clip, tensors: dict, strength: float = 1.0):
    """Patch ComfyUI's MODEL/CLIP with the fresh LoRA the way the stock Load LoRA node does."""
    import comfy.sd

    return comfy.sd.load_lora_for_models(model, clip, tensors, strength, strength)


def model_mismatch(model, fingerprint, ckpt_path: str) -> str | None:
    """Warn when the connected MODEL is not the checkpoint the LoRA was trained on (the guide's colour shifts)."""
    import torch

    try:
        first = model.model.diffusion_model.input_blocks[0][0].weight  # LDM layout: the UNet's conv_in
    except (AttributeError, IndexError, TypeError):
        return None
    theirs = first.detach().flatten()[:fingerprint.numel()].float().cpu()
    if theirs.shape == fingerprint.shape and torch.allclose(theirs, fingerprint, atol=2e-3, rtol=1e-2):
        return None
    return (f"The MODEL connected to Train LoRA is not '{ckpt_path}', the checkpoint the LoRA was trained on. "
            "Applying it there gives colour shifts and a weaker effect. Fix: connect the MODEL/CLIP of the same "
            "checkpoint that Configure LoRA names.")


class TrainLoRA:
    DESCRIPTION = ("Trains the LoRA here, in ComfyUI. ComfyUI's loaded models are unloaded first to free the "
                   "GPU. Progress, loss and ETA show on the node; Cancel stops within one step and writes no LoRA. "
                   "Connect MODEL/CLIP to get them back with the new LoRA applied, to sample with it at once.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (LORA_TYPE, "MODEL", "CLIP", "STRING")
    RETURN_NAMES = ("lora", "model", "clip", "summary")
    OUTPUT_TOOLTIPS = ("The trained LoRA: connect Save LoRA to models/loras.",
                       "The input MODEL with the LoRA applied (strength 1.0); empty if no MODEL was connected.",
                       "The input CLIP with the LoRA applied; empty if no CLIP was connected.",
                       "What happened: steps, loss before and after, time, the job record's path.")
    FUNCTION = "train"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "dataset": (DATASET_TYPE, {"tooltip": "From Load Dataset (LoRA Studio)."}),
                "config": (CONFIG_TYPE, {"tooltip": "From Configure LoRA (LoRA Studio)."}),
            },
            "optional": {
                "model": ("MODEL", {"tooltip": "Optional: the same checkpoint's MODEL, returned with the LoRA applied."}),
                "clip": ("CLIP", {"tooltip": "Optional: the same checkpoint's CLIP, returned with the LoRA applied."}),
                "resume": (["auto", "off"], {"default": "auto", "tooltip": "auto: if a run of this LoRA name was "
                           "cancelled or failed with the same settings, continue from its last checkpoint. "
                           "off: always start from scratch."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def train(self, dataset: dict, config: dict, model=None, clip=None, resume: str = "auto", unique_id=None):
        data = dict(config, dataset=dataset["root"], trigger_token=dataset["trigger_token"],
                    placeholder=dataset["placeholder"], jobs_dir=str(studio_dir("jobs")),
                    cache_dir=str(studio_dir("cache")))
        data = confined(data)  # class_data_dir, tokenizer_dir, resume_from from `extra`: inside the allowed roots
        if not data.get("resume_from"):
            data["resume_from"] = "auto" if resume == "auto" else ""
        if not data.get("tokenizer_dir"):
            data["tokenizer_dir"] = tokenizer_dir()
        cfg = TrainConfig.from_dict(data).validate()
        run = current_run(unique_id)  # who queued it, from which browser session: the record and the events say
        reporter = NodeReporter(unique_id, cfg.max_train_steps, run)
        free_comfy_memory()
        interrupt = interrupt_exception()

        def on_step(info):
            try:
                reporter.step(info)
            except BaseException as e:  # ComfyUI's progress hook raises its own exception on Cancel
                if interrupt is not None and isinstance(e, interrupt):
                    raise TrainingCancelled(info.step) from None
                raise

        callbacks = Callbacks(on_step=on_step, should_stop=interrupted, on_message=reporter.text,
                              on_preview=lambda step, images, prompts, neg: reporter.preview(step, images))
        try:
            # run_job checks the dataset again, now with the run's resolution and preset, and keeps the
            # report in the job record (Load Dataset could only judge it at a default size)
            result = run_job(cfg, callbacks, write_lora=False,
                             record_extra={k: run[k] for k in ("user", "prompt_id", "client_id", "node_id")})
        except TrainingCancelled as e:
            reporter.text(str(e))
            if interrupt is not None:
                raise interrupt() from None  # ComfyUI shows "interrupted" and goes on with the queue
            raise
        finally:
            reporter.close()
            free_comfy_memory()
        m = result.record["metrics"]
        summary = (f"{cfg.name}: {m['steps']} steps in {m['train_seconds']:.0f}s; held-out loss "
                   f"{m['eval_loss_before']:.4f} -> {m['eval_loss_after']:.4f}. Job record: {result.record_path}")
        warning = model_mismatch(model, result.base_fingerprint, cfg.base_model) if model is not None else None
        if warning:
            log.warning(warning)
            summary = f"WARNING: {warning}\n{summary}"
        reporter.text(summary)
        lora = {"tensors": result.tensors, "metadata": result.metadata, "adapter_config": result.adapter_config,
                "record": result.record, "record_path": str(result.record_path), "name": cfg.name,
                "family": result.family}
        out_model, out_clip = (apply_lora(model, clip, result.tensors) if (model is not None or clip is not None)
                               else (None, None))
        # ui.loss: the chart also shows a run that ComfyUI served from its cache (no step events then)
        # ui.job: the node asks the server for the record when the graph is shown again (tab switch, reload)
        return {"ui": {"loss": result.record["metrics"]["losses"], "job": [result.record["id"]],
                       "summary": [summary]}, "result": (lora, out_model, out_clip, summary)}
