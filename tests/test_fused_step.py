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
