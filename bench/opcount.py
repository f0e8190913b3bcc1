"""Count what one optimizer step dispatches: every aten op, the ones that launch a kernel, and host syncs.

A `TorchDispatchMode` sees each aten call below autograd (forward, backward and the optimizer alike).
It is switched on from torch's global optimizer-step post-hook at the end of step 1 and off at the end
of step 2, so the window is one whole periodic iteration of the trainer's loop as it really runs: its
logging and loss read-back of step 1, data for step 2, forward, backward, clipping and the optimizer.

Classes of op:
- view: the op only re-describes memory (`OpOverload.is_view`, `detach`, `alias`) — no kernel;
- allocation: `empty*` — memory only, no kernel (profiler markers `_record_function_*` are counted here too);
- kernel: everything else (≈ kernel launches on a GPU; a few CPU-only decompositions differ);
- host sync: `_local_scalar_dense` (`.item()`, `float(t)`, `bool(t)`) and ops whose output size depends on
  data (`nonzero`, `masked_select`, `unique`…): the host waits for the device;
- cross-device copy: `_to_copy`/`copy_` between CPU and another device; `blocking` unless the source is
  pinned and `non_blocking` was asked. (On a CPU-only run there is no second device: this column is 0
  by construction there and is measured only with `--device cuda`.)
"""
from __future__ import annotations

import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
_VIEW_LIKE = {"detach", "alias", "lift_fresh", "_unsafe_view", "_reshape_alias", "view", "as_strided"}  # no kernel
# memory only, or profiler markers (torch.optim wraps each step in record_function): no kernel
_ALLOC = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "_record_function_enter",
          "_record_function_enter_new", "_record_function_exit"}
_DATA_DEPENDENT = {"nonzero", "masked_select", "unique", "_unique", "_unique2", "unique_consecutive", "unique_dim",
                   "is_nonzero", "equal", "nonzero_static"}


def _device_of(x):
    return x.device if isinstance(x, torch.Tensor) else None


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.all = 0
        self.views = 0
        self.allocs = 0
        self.kernels = 0
        self.syncs = 0
        self.blocking_copies = 0
        self.async_copies = 0
        self.by_name: collections.Counter = collections.Counter()
        self.host_reads = 0
        self.host_scalars: set[int] = set()  # data pointers of tensors that live on the host on any machine
        self.paused = 0  # >0 while host-side data loading runs (PIL → tensor transforms): not device work

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.paused:
            self._count(func, args, kwargs)
        return func(*args, **kwargs)

    def _count(self, func, args, kwargs):
        name = func.overloadpacket.__name__
        self.all += 1
        if getattr(func, "is_view", False) or name in _VIEW_LIKE:
            self.views += 1
            return
        if name in _ALLOC:
            self.allocs += 1
            return
        self.kernels += 1
        self.by_name[name] += 1
        if name == "_local_scalar_dense" and args[0].device.type == "cpu" and args[0].data_ptr() in self.host_scalars:
            self.kernels -= 1
            self.host_reads += 1  # an optimizer's `step` counter: kept on the host by design, no kernel, no sync
        elif name == "_local_scalar_dense" or name in _DATA_DEPENDENT:
            self.syncs += 1
        elif name in ("_to_copy", "copy_"):
            src = args[1] if name == "copy_" else args[0]
            dst_dev = _device_of(args[0]) if name == "copy_" else kwargs.get("device")
            src_dev = _device_of(src)
            if dst_dev is not None and src_dev is not None and torch.device(dst_dev).type != src_dev.type:
                # host→device is asynchronous only from pinned memory, device→host only into pinned memory
                if src_dev.type == "cpu":
                    host_pinned = src.is_pinned()
                else:
                    host_pinned = name == "copy_" and args[0].is_pinned() or bool(kwargs.get("pin_memory"))
                if host_pinned and (kwargs.get("non_blocking") or (name == "copy_" and len(args) > 2 and args[2])):
                    self.async_copies += 1
                    return
                self.blocking_copies += 1

    def summary(self) -> dict:
        return {"all_ops": self.all, "view_ops": self.views, "allocations": self.allocs, "kernel_ops": self.kernels,
                "host_syncs": self.syncs, "host_scalar_reads": self.host_reads, "blocking_copies": self.blocking_copies, "async_copies": self.async_copies,
                "top_ops": dict(self.by_name.most_common(25))}


class StepWindow:
    """Counts ops between the end of optimizer step `start` and the end of step `start + 1`.

    `AcceleratedOptimizer` also reports its inner optimizer's step; only torch's own optimizers count."""

    def __init__(self, start: int = 1, stop_after: bool = True):
        self.start, self.stop_after = start, stop_after
        self.steps = 0
        self.counter: OpCounter | None = None
        self.done = False
        self._handle = None

    class Finished(BaseException):  # BaseException: no trainer's `except Exception` swallows it
        pass

    def install(self) -> "StepWindow":
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self._handle = register_optimizer_step_post_hook(self._on_step)
        return self

    def _on_step(self, opt, args, kwargs):
        if type(opt).__name__ == "AcceleratedOptimizer":
            return
        self.steps += 1
        if self.steps == self.start:
            self.counter = OpCounter()
            self.counter.host_scalars = {s["step"].data_ptr() for s in opt.state.values()
                                         if isinstance(s, dict) and isinstance(s.get("step"), torch.Tensor)
                                         and not s["step"].is_cuda and s["step"].dim() == 0}
            self.counter.__enter__()
        elif self.steps == self.start + 1 and self.counter is not None and not self.done:
            self.counter.__exit__(None, None, None)
            self.done = True
            if self.stop_after:
                raise StepWindow.Finished()

    def remove(self) -> None:
        if self.counter is not None and not self.done:
            self.counter.__exit__(None, None, None)
        if self._handle is not None:
            self._handle.remove()


def emulate_cuda_optimizer_defaults() -> None:
    """On a GPU, an optimizer left at its defaults (the guide's AdamW) runs torch's `foreach` implementation;
    on the CPU torch picks the per-tensor loop. The count is meant for the GPU path, so pick what CUDA would."""
    from torch.optim import optimizer

    orig = optimizer._default_to_fused_or_foreach

    def cuda_like(params, differentiable, use_fused=False):
        fused, foreach = orig(params, differentiable, use_fused)
        return fused, (not fused and not differentiable) or foreach

    optimizer._default_to_fused_or_foreach = cuda_like
    import torch.optim.adamw as adamw_mod
    import torch.optim.adam as adam_mod

    for mod in (adamw_mod, adam_mod):
        if hasattr(mod, "_default_to_fused_or_foreach"):
            mod._default_to_fused_or_foreach = cuda_like


def pause_during_data_loading(counter_getter) -> None:
    """The guide's script decodes and transforms pictures on the host inside its DataLoader; those ops run on
    the CPU on any machine, so they are left out (ours reads tensors cached on the device instead)."""
    from torch.utils.data._utils import fetch

    for cls in (fetch._MapDatasetFetcher, fetch._IterableDatasetFetcher):
        orig = cls.fetch

        def wrapped(self, *a, _orig=orig, **k):
            c = counter_getter()
            if c is not None:
                c.paused += 1
            try:
                return _orig(self, *a, **k)
            finally:
                if c is not None:
                    c.paused -= 1

        cls.fetch = wrapped
