"""TrainLoRA: runs the trainer in ComfyUI's process, with progress, loss points and Cancel."""
from __future__ import annotations

import logging

from ..trainer import TrainConfig, TrainingCancelled
from ..trainer.interop import diffusion_model_part
from ..trainer.job import run_job
from ..trainer.loop import Callbacks
from .comfy_bridge import (CATEGORY, Config, Dataset, Lora, NodeReporter, confined, current_run, free_comfy_memory,
                           interrupt_exception, interrupted, io, studio_dir, tokenizer_dir)

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


class TrainLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoraStudio_TrainLoRA",
            display_name="Train LoRA (LoRA Studio)",
            category=CATEGORY,
            description="Trains the LoRA here, in ComfyUI. ComfyUI's loaded models are unloaded first to free the "
                        "GPU. Progress, loss and ETA show on the node; Cancel stops within one step and writes no "
                        "LoRA. Connect MODEL/CLIP to get them back with the new LoRA applied, to sample with it at once.",
            inputs=[
                Dataset.Input("dataset", tooltip="From Load Dataset (LoRA Studio)."),
                Config.Input("config", tooltip="From Configure LoRA (LoRA Studio)."),
                io.Model.Input("model", optional=True, tooltip="Optional: the same checkpoint's MODEL, returned with "
                               "the LoRA applied."),
                io.Clip.Input("clip", optional=True, tooltip="Optional: the same checkpoint's CLIP, returned with the "
                              "LoRA applied."),
                io.Combo.Input("resume", options=["auto", "off"], default="auto", optional=True, tooltip="auto: if a "
                               "run of this LoRA name was cancelled or failed with the same settings, continue from "
                               "its last checkpoint. off: always start from scratch."),
            ],
            outputs=[
                Lora.Output("lora", display_name="lora", tooltip="The trained LoRA: connect Save LoRA to models/loras."),
                io.Model.Output("model_out", display_name="model", tooltip="The input MODEL with the LoRA applied "
                                "(strength 1.0); empty if no MODEL was connected."),
                io.Clip.Output("clip_out", display_name="clip", tooltip="The input CLIP with the LoRA applied; empty "
                               "if no CLIP was connected."),
                io.String.Output("summary", display_name="summary", tooltip="What happened: steps, loss before and after, time, the job "
                                 "record's path."),
                io.LoraModel.Output("lora_model", display_name="lora_model", tooltip="The UNet part of the LoRA as "
                                    "ComfyUI's own LORA_MODEL: for core's Load LoRA Model and Save LoRA Weights nodes. "
                                    "The text-encoder part stays in 'lora' (Save LoRA keeps both)."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, dataset: dict, config: dict, model=None, clip=None, resume: str = "auto") -> io.NodeOutput:
        cfg = train_config(dataset, config, resume)
        result, summary = run_in_comfy(cfg, getattr(cls.hidden, "unique_id", None), model)
        lora = {"tensors": result.tensors, "metadata": result.metadata, "adapter_config": result.adapter_config,
                "record": result.record, "record_path": str(result.record_path), "name": cfg.name,
                "family": result.family}
        out_model, out_clip = (apply_lora(model, clip, result.tensors) if (model is not None or clip is not None)
                               else (None, None))
        # ui.loss: the chart also shows a run that ComfyUI served from its cache (no step events then)
        # ui.job: the node asks the server for the record when the graph is shown again (tab switch, reload)
        return io.NodeOutput(lora, out_model, out_clip, summary, diffusion_model_part(result.tensors), ui={
            "loss": result.record["metrics"]["losses"], "job": [result.record["id"]], "summary": [summary]})


def train_config(dataset: dict, config: dict, resume: str) -> TrainConfig:
    """The validated run config: Configure LoRA's fields, the dataset's, and ComfyUI's folders."""
    data = dict(config, dataset=dataset["root"], trigger_token=dataset["trigger_token"],
                placeholder=dataset["placeholder"], jobs_dir=str(studio_dir("jobs")), cache_dir=str(studio_dir("cache")))
    data = confined(data)  # class_data_dir, tokenizer_dir, resume_from from `extra`: inside the allowed roots
    if not data.get("resume_from"):
        data["resume_from"] = "auto" if resume == "auto" else ""
    if not data.get("tokenizer_dir"):
        data["tokenizer_dir"] = tokenizer_dir()
    return TrainConfig.from_dict(data).validate()


def run_in_comfy(cfg: TrainConfig, node_id, model):
    """run_job with ComfyUI's progress, cancel and memory handling; returns the result and the summary text."""
    run = current_run(node_id)  # who queued it, from which browser session: the record and the events say
    reporter = NodeReporter(node_id, cfg.max_train_steps, run)
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
    return result, summary
