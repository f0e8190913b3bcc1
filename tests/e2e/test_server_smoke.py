"""The harness itself: a real ComfyUI lists, loads and samples the SD1.5-shaped random checkpoint."""

from __future__ import annotations

import ast

import pytest

pytestmark = pytest.mark.e2e


def test_checkpoint_is_listed_loaded_and_sampled(comfy_server, sd15_checkpoint):
    ckpt_names = comfy_server.object_info("CheckpointLoaderSimple")["input"]["required"]["ckpt_name"][0]
    assert sd15_checkpoint.name in ckpt_names

    mark = comfy_server.log_mark()
    prompt_id = comfy_server.post_prompt(sd15_checkpoint.txt2img_prompt(size=64, steps=1))
    entry = comfy_server.wait(prompt_id, timeout=600)
    comfy_server.assert_success(entry)

    images = entry["outputs"]["7"]["images"]
    assert len(images) == 1 and images[0]["type"] == "temp"
    assert (comfy_server.temp_dir / images[0]["subfolder"] / images[0]["filename"]).is_file()

    # ComfyUI recognised the file as SD1.5 and every tensor in it found a home.
    log = comfy_server.log_text(since=mark)
    # ComfyUI logs the detected type when it first loads the file; an earlier test in this server session
    # may have loaded it already (it is the only checkpoint), so look at the whole log for that line.
    assert "model_type EPS" in comfy_server.log_text(), comfy_server.log_tail()
    for bad in ("left over keys", "unet missing", "unet unexpected", "Missing VAE keys", "Leftover VAE keys",
                "clip unexpected", "lora key not loaded"):
        assert bad not in log, f"{bad!r} in ComfyUI log\n{comfy_server.log_tail()}"
    # Like a real SD1.5 file, ours has no CLIP logit_scale / text_projection (ComfyUI only debug-logs that).
    for line in log.splitlines():
        if line.startswith("clip missing:"):
            missing = ast.literal_eval(line.split(":", 1)[1].strip())
            assert set(missing) <= {"clip_l.logit_scale", "clip_l.transformer.text_projection.weight"}, line

    # The websocket saw the run through.
    types = [m["type"] for m in comfy_server.messages(prompt_id=prompt_id)]
    assert "execution_start" in types and "execution_success" in types, types
