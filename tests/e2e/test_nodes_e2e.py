"""The four nodes in a real ComfyUI: API queue, progress, the file in models/loras, Load LoRA drops
nothing, ComfyUI's patched UNet equals diffusers' reload, Cancel, and a second job queued behind."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NODE_IDS = ["LoraStudio_LoadDataset", "LoraStudio_ConfigureLoRA", "LoraStudio_TrainLoRA", "LoraStudio_SaveLoRAToModels"]


def copy_sample(server, folder: str, n: int = 4) -> str:
    """The shipped sample's first `n` pictures as dataset `folder` in the server's input folder; its name."""
    src = REPO / "example_data" / "watercolor_fox"
    dst = server.input_dir / folder
    if not dst.exists():
        (dst / "images").mkdir(parents=True)
        lines = (src / "metadata.jsonl").read_text().splitlines()[:n]
        for line in lines:
            shutil.copy(src / "images" / json.loads(line)["file"], dst / "images")
        (dst / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return dst.name


@pytest.fixture(scope="module")
def dataset_name(comfy_server) -> str:
    """Four pictures of the shipped sample, copied into the server's input folder."""
    return copy_sample(comfy_server, "watercolor_fox")


def api_prompt(ckpt: str, dataset: str, name: str, steps: int = 3) -> dict:
    """The shipped API-format example, shrunk to 64 px and a few steps for a CPU."""
    prompt = json.loads((REPO / "example_workflows" / "api" / "train_api.json").read_text())
    by_type = {node["class_type"]: node for node in prompt.values()}
    by_type["LoraStudio_LoadDataset"]["inputs"].update(dataset=dataset, trigger_token="wcfox")
    conf = by_type["LoraStudio_ConfigureLoRA"]["inputs"]
    conf.update(ckpt_name=ckpt, name=name, resolution=64, max_train_steps=steps, rank=4, alpha=4.0,
                train_batch_size=1, gradient_accumulation_steps=1, mixed_precision="no",
                extra=json.dumps({"test_mode": True, "lr_warmup_steps": 0, "save_precision": "fp32",
                                  "learning_rate": 1e-3, "snr_gamma": 0, "preview_sampling_steps": 2}))
    return prompt


def test_object_info_lists_the_nodes_with_tooltips(comfy_server):
    assert comfy_server.import_failures() == []
    info = comfy_server.object_info()
    for node_id in NODE_IDS:
        node = info[node_id]
        assert node["category"] == "LoRA Studio" and node["description"]
        for section in ("required", "optional"):
            for name, spec in node["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_api_job_trains_saves_and_loads_in_comfyui(comfy_server, sd15_checkpoint, dataset_name):
    mark = comfy_server.log_mark()
    prompt = api_prompt(sd15_checkpoint.name, dataset_name, "e2e_main")
    # core's Save LoRA Weights takes Train LoRA's LORA_MODEL output: our nodes compose with ComfyUI's own
    train_id = next(k for k, v in prompt.items() if v["class_type"] == "LoraStudio_TrainLoRA")
    prompt["90"] = {"class_type": "SaveLoRANode", "inputs": {"lora": [train_id, 4], "prefix": "loras/e2e_core"}}
    entry = comfy_server.run(prompt, timeout=900)
    saved = [v for v in entry["outputs"].values() if "text" in v]
    assert saved and saved[0]["text"][0].startswith("saved e2e_main")
    lora_file = comfy_server.loras_dir / "e2e_main.safetensors"
    assert lora_file.is_file()
    assert (comfy_server.loras_dir / "e2e_main.adapter_config.json").is_file()
    record = json.loads((comfy_server.loras_dir / "e2e_main.job.json").read_text())
    assert record["status"] == "finished" and record["outputs"]["lora"] == str(lora_file)
    import torch
    from safetensors.torch import load_file

    core_files = sorted((comfy_server.output_dir / "loras").glob("e2e_core*.safetensors"))
    assert len(core_files) == 1, core_files
    ours, core = load_file(str(lora_file)), load_file(str(core_files[0]))
    assert core.keys() == {k for k in ours if k.startswith("lora_unet_")} and core
    assert all(torch.equal(core[k], ours[k]) for k in core)

    # progress reached the websocket: ComfyUI's own progress messages and our loss points
    pid = entry["prompt"][1]
    progress = [m for m in comfy_server.messages("progress", prompt_id=pid)]
    assert [m["data"]["value"] for m in progress][-1] == 3
    loss = [m["data"] for m in comfy_server.messages("lora_studio.loss")]
    assert [d["step"] for d in loss][-3:] == [1, 2, 3] and all(d["loss"] > 0 for d in loss)
    assert "lora key not loaded" not in comfy_server.log_text(since=mark)
    assert comfy_server.ws_binary, "no preview image reached the websocket"

    # the file is in ComfyUI's list at once, without a restart
    names = comfy_server.get("/models/loras").json()
    assert "e2e_main.safetensors" in names

    # the stock LoraLoader applies every key
    mark = comfy_server.log_mark()
    sample = sd15_checkpoint.txt2img_prompt(size=64, steps=1, text="watercolor painting of wcfox fox")
    sample["8"] = {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1],
                                                          "lora_name": "e2e_main.safetensors",
                                                          "strength_model": 1.0, "strength_clip": 1.0}}
    sample["5"]["inputs"]["model"] = ["8", 0]
    for k in ("2", "3"):
        sample[k]["inputs"]["clip"] = ["8", 1]
    comfy_server.run(sample, timeout=600)
    log = comfy_server.log_text(since=mark)
    assert "lora key not loaded" not in log, log[-3000:]

    _compare_comfy_and_diffusers(comfy_server, sd15_checkpoint.path, lora_file)


def _compare_comfy_and_diffusers(server, ckpt: Path, lora_file: Path):
    """ComfyUI's UNet patched by its own LoRA loader vs diffusers' load_lora_weights on the same file."""
    import sys

    import torch

    if str(server.comfyui_path) not in sys.path:
        sys.path.insert(0, str(server.comfyui_path))
    try:
        from comfy.cli_args import args as comfy_args

        comfy_args.cpu = True  # the test process has no GPU either; set before model_management loads
        import comfy.sd
        import comfy.utils
    except ImportError as e:
        pytest.skip(f"ComfyUI's modules cannot be imported in the test process ({e})")
    from diffusers import StableDiffusionPipeline

    from trainer.models import load_base_model

    torch.manual_seed(0)
    x, t, ctx = torch.randn(1, 4, 8, 8), torch.tensor([500.0]), torch.randn(1, 77, 768)

    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(str(ckpt), output_vae=False, output_clip=True)
    lora = comfy.utils.load_torch_file(str(lora_file), safe_load=True)
    patched, _ = comfy.sd.load_lora_for_models(model, clip, lora, 1.0, 1.0)
    patched.patch_model()
    unet = patched.model.diffusion_model.float()
    with torch.no_grad():
        ours_comfy = unet(x, timesteps=t, context=ctx)
    del model, clip, patched, unet

    bm = load_base_model(ckpt, tokenizer_dir=str(server.comfyui_path / "comfy" / "sd1_tokenizer"))
    pipe = StableDiffusionPipeline(vae=bm.vae, text_encoder=bm.text_encoders[0], tokenizer=bm.tokenizers[0],
                                   unet=bm.unet, scheduler=bm.scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    with torch.no_grad():
        base_out = bm.unet(x, t, ctx).sample
    pipe.load_lora_weights(str(lora_file))
    with torch.no_grad():
        ours_diffusers = pipe.unet(x, t, ctx).sample
    rel = ((ours_comfy - ours_diffusers).norm() / ours_diffusers.norm()).item()
    effect = ((ours_diffusers - base_out).norm() / base_out.norm()).item()
    assert effect > 1e-5, "the LoRA changed nothing: the comparison would be vacuous"
    assert rel <= 1e-3, (rel, effect)


def _wait_for_training_step(server, prompt_id: str, timeout: float = 600) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if any(m["data"].get("step", 0) >= 1 for m in server.messages("lora_studio.loss")
               if m["data"].get("node") is not None):
            return
        time.sleep(0.2)
    raise AssertionError("training never reached step 1")


def test_interrupt_stops_within_a_step_and_leaves_no_file(comfy_server, sd15_checkpoint, dataset_name):
    before = set(p.name for p in comfy_server.loras_dir.iterdir()) if comfy_server.loras_dir.exists() else set()
    comfy_server.clear_messages()
    prompt = api_prompt(sd15_checkpoint.name, dataset_name, "e2e_cancel", steps=8)
    pid = comfy_server.post_prompt(prompt)
    _wait_for_training_step(comfy_server, pid)
    t_cancel = time.time()
    comfy_server.interrupt()
    entry = comfy_server.wait(pid, timeout=300)
    stop_s = time.time() - t_cancel
    status = entry["status"]
    assert status["status_str"] == "error"
    assert any(m[0] == "execution_interrupted" for m in status["messages"]), status
    steps = [m["data"]["step"] for m in comfy_server.messages("lora_studio.loss")]
    assert max(steps) < 8
    # within one step: the time to stop is at most about one step's time (plus clean-up)
    loss = [m for m in comfy_server.messages("lora_studio.loss")]
    assert stop_s < 60, stop_s
    after = set(p.name for p in comfy_server.loras_dir.iterdir()) if comfy_server.loras_dir.exists() else set()
    assert after == before, after - before  # nothing new, not even a partial file
    jobs = sorted((comfy_server.output_dir / "lora_studio" / "jobs").glob("*e2e_cancel*.json"))
    assert json.loads(jobs[-1].read_text())["status"] == "cancelled"
    # the server goes on serving
    comfy_server.run(sd15_checkpoint.txt2img_prompt(size=64, steps=1), timeout=600)
    assert loss  # the run had started
    # Queue again: "resume: auto" continues the cancelled run from its checkpoint instead of starting over
    comfy_server.clear_messages()
    comfy_server.run(prompt, timeout=900)
    jobs = sorted((comfy_server.output_dir / "lora_studio" / "jobs").glob("*e2e_cancel*.json"))
    record = json.loads(jobs[-1].read_text())
    assert record["status"] == "finished" and "resumed_from" in record, record.get("resumed_from")
    first_step = min(m["data"]["step"] for m in comfy_server.messages("lora_studio.loss"))
    assert first_step == max(steps) + 1


def test_second_job_queued_behind_the_first_writes_its_own_file(comfy_server, sd15_checkpoint, dataset_name):
    first = comfy_server.post_prompt(api_prompt(sd15_checkpoint.name, dataset_name, "e2e_queue", steps=2))
    second_prompt = api_prompt(sd15_checkpoint.name, dataset_name, "e2e_queue", steps=2)
    second_prompt_conf = [n for n in second_prompt.values() if n["class_type"] == "LoraStudio_ConfigureLoRA"][0]
    second_prompt_conf["inputs"]["seed"] = 7  # a different job, not a cached repeat
    second = comfy_server.post_prompt(second_prompt)
    comfy_server.assert_success(comfy_server.wait(first, timeout=900))
    comfy_server.assert_success(comfy_server.wait(second, timeout=900))
    files = sorted(p.name for p in comfy_server.loras_dir.glob("e2e_queue*.safetensors"))
    assert files == ["e2e_queue.safetensors", "e2e_queue_2.safetensors"]


def test_pictures_made_in_the_same_graph_train_a_lora(comfy_server, sd15_checkpoint):
    """txt2img (batch of 4) → VAE Decode → Dataset from Images → Train LoRA → Save, in one prompt."""
    prompt = api_prompt(sd15_checkpoint.name, "unused", "e2e_graph_images")
    load = next(k for k, n in prompt.items() if n["class_type"] == "LoraStudio_LoadDataset")
    gen = {f"g{k}": v for k, v in sd15_checkpoint.txt2img_prompt(size=64, steps=2, text="a red fox").items()
           if v["class_type"] != "PreviewImage"}
    for node in gen.values():  # renumber the generation's links into the g-prefixed ids
        for key, value in node["inputs"].items():
            if isinstance(value, list):
                node["inputs"][key] = [f"g{value[0]}", value[1]]
    gen["g4"]["inputs"]["batch_size"] = 4
    prompt.update(gen)
    prompt[load] = {"class_type": "LoraStudio_DatasetFromImages", "inputs": {
        "images": ["g6", 0], "captions": "a photo of <my_token>", "trigger_token": "sksfox", "name": "e2e_graph"}}
    entry = comfy_server.run(prompt, timeout=900)
    lora_file = comfy_server.loras_dir / "e2e_graph_images.safetensors"
    assert lora_file.is_file()
    record = json.loads((comfy_server.loras_dir / "e2e_graph_images.job.json").read_text())
    assert record["status"] == "finished" and record["metrics"]["steps"] == 3
    datasets = comfy_server.output_dir / "lora_studio" / "datasets"
    (folder,) = [p for p in datasets.iterdir() if p.name.startswith("e2e_graph-")]
    assert len(list((folder / "images").glob("*.png"))) == 4
    assert Path(record["config"]["dataset"]).resolve() == folder.resolve() and record["config"]["trigger_token"] == "sksfox"
    assert entry["status"]["status_str"] == "success"
