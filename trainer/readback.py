"""Per-step scalars (the loss and its terms) read back to the host without stalling the device.

`float(loss)` every step makes the host wait for the GPU to finish the step before it may queue the next
one: the GPU then idles while Python prepares the next step. Here each step's values are stacked on the
device and copied into pinned host memory with `non_blocking=True`, and a CUDA event marks when the copy
is done; `ready()` hands back, in step order, those whose event has completed (`Event.query()` does not
block), and `ready(wait=True)` waits for all of them — done before a checkpoint, a preview, or the end,
so nothing is written after a loss that is not finite. On the CPU there is nothing to wait for: each
step's values are ready at once. Host copies are read through numpy, which dispatches no torch op.
"""
from __future__ import annotations

from collections import deque

import torch


class StepScalars:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._pending: deque = deque()

    def push(self, step: int, values: dict[str, torch.Tensor]) -> None:
        keys = list(values)
        t = values[keys[0]].reshape(1) if len(keys) == 1 else torch.stack([values[k] for k in keys])
        t = t.detach().float()
        if self.cuda:
            host = torch.empty(t.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(t, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host, event = t, None
        self._pending.append((step, keys, host, event))

    def ready(self, wait: bool = False) -> list[tuple[int, dict[str, float]]]:
        out = []
        while self._pending:
            step, keys, host, event = self._pending[0]
            if event is not None and not event.query():
                if not wait:
                    break
                event.synchronize()
            self._pending.popleft()
            out.append((step, dict(zip(keys, host.numpy().tolist()))))
        return out
