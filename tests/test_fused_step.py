"""The fused LoRA layer and the sync-free step train the same LoRA as peft's stock layers (tiny models, CPU)."""
from __future__ import annotations

import copy

import pytest
import torch

from conftest import tiny_overrides


def _run(tmp_path, base, data, monkeypatch, fused: bool, **kw):
    from safetensors.torch import load_file

    import trainer.loop as loop
    from trainer import TrainConfig
    from trainer.job import run_job
    from trainer.lora import inject

    monkeypatch.setattr(loop, "inject", lambda m, spec: inject(m, spec, fused=fused))
    cfg = TrainConfig.from_dict(tiny_overrides(tmp_path, base, data, max_train_steps=4, preview_every=-1,
                                               learning_rate=1e-4, **kw))  # the usual rate (the tiny default 1e-2 magnifies rounding)
    res = run_job(cfg)
    return res.train.losses, load_file(str(res.lora_path))


@pytest.mark.parametrize("extra", [{}, {"train_text_encoder": True, "gradient_accumulation_steps": 2}],
                         ids=["unet", "te+accumulation"])
def test_fused_layer_trains_the_same_lora_as_peft(tmp_path, tiny_sd15, sample_dataset, monkeypatch, extra):
    ref_losses, ref = _run(tmp_path / "peft", tiny_sd15, sample_dataset, monkeypatch, fused=False, **extra)
    losses, got = _run(tmp_path / "fused", tiny_sd15, sample_dataset, monkeypatch, fused=True, **extra)
    assert len(losses) == len(ref_losses) == 4
    assert max(abs(a - b) for a, b in zip(losses, ref_losses)) <= 1e-5
    assert set(got) == set(ref)
    # relative to each tensor's norm: Adam (lr 1e-2 here) magnifies last-bit differences of single elements
    rel = max(((got[k] - ref[k]).norm() / ref[k].norm().clamp_min(1e-12)).item() for k in ref)
    assert rel <= 1e-5, rel


def test_fused_layer_is_peft_layer_with_peft_state_dict():
    from peft.tuners.lora.layer import Linear as PeftLinear

    from trainer.fused_lora import AdapterCast, FusedLoraLinear
    from trainer.lora import AdapterSpec, adapter_state_dict, inject

    torch.manual_seed(0)
    model = torch.nn.Module()
    model.to_q = torch.nn.Linear(8, 6)
    model.forward = lambda x: model.to_q(x)
    plain = copy.deepcopy(model)
    spec = AdapterSpec(4, 8.0, ("to_q",))
    torch.manual_seed(1)
    inject(plain, spec, fused=False)
    torch.manual_seed(1)
    params = inject(model, spec)
    assert isinstance(model.to_q, FusedLoraLinear) and isinstance(model.to_q, PeftLinear)
    assert adapter_state_dict(model).keys() == adapter_state_dict(plain).keys()
    with torch.no_grad():  # B starts at zero: give it something to carry
        for p, q in zip(params, [p for n, p in plain.named_parameters() if "lora_" in n]):
            p.normal_()
            q.copy_(p)
    # bf16 model, fp32 masters: one cast per step through AdapterCast, gradients land on the fp32 masters
    for m in (model, plain):
        m.to(torch.bfloat16)
        m.forward = (lambda mm: (lambda x: mm.to_q(x)))(m)
    for p in params:
        p.data = p.data.float()
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    cast = AdapterCast([model])
    cast.begin()
    model(x).float().sum().backward()
    cast.end()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in params)
    assert model.to_q._work is None


def _mini_unet_model(root):
    """The tiny SD1.5 model with a still smaller UNet (one cross-attention block down and up, no mid block): the
    same kinds of layers the compiled step has to get right, in the fewest kernels to compile (inductor on the
    CPU compiles each with the C compiler; the two-block tiny UNet took ~11 minutes of CI under load)."""
    import json
    import shutil

    from trainer.models import build_tiny_model
    from trainer.models.load import CONFIG_ROOT

    cfg_root = root / "mini-config"
    shutil.copytree(CONFIG_ROOT / "tiny-sd15", cfg_root)
    unet = json.loads((cfg_root / "unet" / "config.json").read_text())
    unet.update(block_out_channels=[32], down_block_types=["CrossAttnDownBlock2D"],
                up_block_types=["CrossAttnUpBlock2D"], mid_block_type=None)
    (cfg_root / "unet" / "config.json").write_text(json.dumps(unet))
    return build_tiny_model(root / "mini-sd15", "sd15", config_root=cfg_root)


@pytest.mark.slow  # inductor compiles the mini UNet's forward and backward: ~1-2 minutes on two shared cores
def test_compiled_step_trains_the_eager_lora(tmp_path, sample_dataset, monkeypatch):
    """torch.compile (inductor on the CPU, needs a C compiler) trains the same LoRA as eager: loss within 1e-5,
    every LoRA tensor within 1e-5 of eager's, relative to its norm (‖compiled − eager‖ / ‖eager‖).

    In float64. Inductor legitimately reorders float sums (and runs the UNet channels_last), so gradients differ
    in their last bits; AdamW's first updates are ≈ lr·g/(|g| + ε), which turns that last-bit difference of an
    element whose gradient is ~0 into a change of up to lr. In fp32 that alone made the files differ by 1.1e-3
    after two steps (measured: gradients within 4e-6, the step-1 update 1.7e-3); in fp64 the last bits sit ~1e9
    times lower and the files agree to ~3e-7, so a 1e-5 bar tests the compiled step, not Adam's amplification
    of rounding. A wrong kernel, a lost LoRA scale or a missed layer is off by far more than 1e-5."""
    import shutil

    if not (shutil.which("gcc") or shutil.which("cc")):
        pytest.skip("inductor on the CPU needs a C compiler (gcc/cc), none on PATH")
    from safetensors.torch import load_file

    import trainer.loop as loop
    from trainer import TrainConfig
    from trainer.job import run_job
    from trainer.loop import Callbacks

    monkeypatch.setattr(loop, "weight_dtype", lambda mixed_precision: torch.float64)
    base = _mini_unet_model(tmp_path)

    def run(sub, mode):
        cfg = TrainConfig.from_dict(tiny_overrides(tmp_path / sub, base, sample_dataset, max_train_steps=2,
                                                   preview_every=-1, learning_rate=1e-4, compile=mode,
                                                   cache_dir=str(tmp_path / "cache")))
        messages = []
        res = run_job(cfg, Callbacks(on_message=messages.append))
        return res.train.losses, load_file(str(res.lora_path)), messages

    eager_losses, eager, _ = run("eager", "off")
    losses, got, messages = run("compiled", "on")
    assert any("compile on" in m for m in messages)
    assert not any("torch.compile failed" in m for m in messages), messages
    assert len(losses) == 2 and max(abs(a - b) for a, b in zip(losses, eager_losses)) <= 1e-5
    assert set(got) == set(eager)
    assert all(v.abs().max() > 0 for k, v in eager.items() if "lora_up" in k)  # the LoRA did train
    rel = max(((got[k] - eager[k]).norm() / eager[k].norm().clamp_min(1e-12)).item() for k in eager)
    assert rel <= 1e-5, rel
    assert (tmp_path / "cache" / "inductor").is_dir()  # the persistent compile cache sits in the pack's cache folder


def test_compile_auto_stays_eager_on_the_cpu_and_says_why(tmp_path):
    from trainer.speed import decide

    on, why = decide("auto", torch.device("cpu"), 2000, 4, tmp_path)
    assert not on and "CPU" in why
    on, why = decide("auto", torch.device("cuda"), 10, 1, tmp_path)
    assert not on and "cold compile" in why
    on, why = decide("auto", torch.device("cuda"), 20000, 4, tmp_path)
    assert on
