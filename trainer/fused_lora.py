"""A LoRA linear layer as one autograd function, registered through peft's custom-module hook.

peft's `lora.Linear` runs base → dropout → cast → A → B → scale → add → cast as separate autograd
nodes, and with fp32 adapters in a bf16 model it casts the input and both weights on every call:
peft's layers were about half of our step's kernels (FACTS.md, "Per-step cost"). `FusedLoraLinear` is a
subclass of peft's own `Linear` — the same parameters, names, config and state dict
(`get_peft_model_state_dict`, `set_peft_model_state_dict`, export and resume read it unchanged) — whose
forward is one `torch.autograd.Function`: three matmuls forward (base, x·Aᵀ, fused add of h·Bᵀ), and in
backward only the gradients that are needed (no grad for the frozen weight; none for x where x needs
none, e.g. the text embeddings entering `to_k`/`to_v`).

fp32 masters, cast once per step: `AdapterCast.begin()` casts every adapter weight to the model's dtype
in one `cat` + one cast (an autograd function: its backward gathers the gradients in one `cat` + one cast
back to fp32 and hands each master a view). The layers read those work copies until `end()`. Anything
the fast path does not cover (dropout in training, several or merged adapters, DoRA and other variants,
fan-in-fan-out) runs peft's own forward unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from peft.tuners.lora.layer import Linear as PeftLinear


class _LoraLinearFn(torch.autograd.Function):
    """y = x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ with W, b frozen."""

    @staticmethod
    def forward(ctx, x, weight, bias, a, b, scale: float):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        h = torch.mm(x2, a.t())
        y = torch.addmm(F.linear(x2, weight, bias), h, b.t(), alpha=scale)
        ctx.save_for_backward(x2, weight, a, b, h)
        ctx.scale, ctx.x_shape = scale, shape
        return y.view(*shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, g):
        x2, weight, a, b, h = ctx.saved_tensors
        s = ctx.scale
        g2 = g.reshape(-1, g.shape[-1])
        u = torch.mm(g2, b)  # dL/dh / s
        if s != 1.0:
            u = u.mul_(s)
        grad_x = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.addmm(torch.mm(g2, weight), u, a).view(ctx.x_shape)
        if ctx.needs_input_grad[3]:
            grad_a = torch.mm(u.t(), x2)
        if ctx.needs_input_grad[4]:
            grad_b = torch.mm(g2.t(), h)
            if s != 1.0:
                grad_b = grad_b.mul_(s)
        return grad_x, None, None, grad_a, grad_b, None


def _cast_flat(dtype: torch.dtype, tensors) -> tuple[torch.Tensor, ...]:
    flat = torch.cat([t.reshape(-1) for t in tensors]).to(dtype)
    return tuple(v.view(t.shape) for v, t in zip(flat.split([t.numel() for t in tensors]), tensors))


class _CastAll(torch.autograd.Function):
    """All masters → one flat tensor in `dtype` → per-master views; backward the same way round."""

    @staticmethod
    def forward(ctx, dtype, *masters):
        ctx.shapes = [m.shape for m in masters]
        ctx.master_dtype = masters[0].dtype
        return _cast_flat(dtype, masters)

    @staticmethod
    def backward(ctx, *grads):
        like = next(g for g in grads if g is not None)
        parts = [g.reshape(-1) if g is not None else like.new_zeros(s.numel()) for g, s in zip(grads, ctx.shapes)]
        flat = torch.cat(parts).to(ctx.master_dtype)
        return (None, *(v.view(s) for v, s in zip(flat.split([s.numel() for s in ctx.shapes]), ctx.shapes)))


class FusedLoraLinear(PeftLinear):
    """peft's `lora.Linear` with a fused forward (see the module docstring)."""

    _work: tuple[torch.Tensor, torch.Tensor] | None = None

    def _fusable(self, kwargs) -> bool:
        if self.disable_adapters or self.merged or kwargs or self.fan_in_fan_out:
            return False
        act = self.active_adapters
        if len(act) != 1 or act[0] not in self.lora_A or act[0] in self.lora_variant:
            return False
        if getattr(self, "lora_bias", {}).get(act[0]):
            return False
        drop = self.lora_dropout[act[0]]
        return isinstance(drop, torch.nn.Identity) or not self.training or drop.p == 0

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if args or not self._fusable(kwargs):
            return super().forward(x, *args, **kwargs)
        name = self.active_adapters[0]
        base = self.get_base_layer()
        w = base.weight
        if self._work is not None:
            a, b = self._work
        else:  # outside a training step (previews, eval, someone else's code): cast here
            a, b = self.lora_A[name].weight, self.lora_B[name].weight
            if a.dtype != w.dtype:
                a, b = a.to(w.dtype), b.to(w.dtype)
        in_dtype = x.dtype
        if x.dtype != w.dtype:
            x = x.to(w.dtype)
        y = _LoraLinearFn.apply(x, w, base.bias, a, b, float(self.scaling[name]))
        return y if y.dtype == in_dtype else y.to(in_dtype)


class AdapterCast:
    """The fp32 master adapter weights of some models, cast to their compute dtype once per step."""

    def __init__(self, models: list[torch.nn.Module]):
        self.layers = [m for model in models for m in model.modules() if isinstance(m, FusedLoraLinear)]

    def begin(self) -> None:
        """Hand every fused layer its work copies for this forward/backward (call once per micro-step)."""
        groups: dict[torch.dtype, list[FusedLoraLinear]] = {}
        for layer in self.layers:
            name = layer.active_adapters[0] if len(layer.active_adapters) == 1 else None
            if name is None or name not in layer.lora_A:
                continue
            groups.setdefault(layer.get_base_layer().weight.dtype, []).append(layer)
        for dtype, layers in groups.items():
            masters = [t for layer in layers for t in self._masters(layer)]
            if all(m.dtype == dtype for m in masters):
                continue  # nothing to cast (fp32 training): the layers use the masters directly
            if torch.is_grad_enabled() and any(m.requires_grad for m in masters):
                work = _CastAll.apply(dtype, *masters)
            else:
                with torch.no_grad():
                    work = _cast_flat(dtype, masters)
            for i, layer in enumerate(layers):
                layer._work = (work[2 * i], work[2 * i + 1])

    def end(self) -> None:
        for layer in self.layers:
            layer._work = None

    @staticmethod
    def _masters(layer: FusedLoraLinear) -> tuple[torch.Tensor, torch.Tensor]:
        name = layer.active_adapters[0]
        return layer.lora_A[name].weight, layer.lora_B[name].weight
