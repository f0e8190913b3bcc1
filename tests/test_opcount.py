"""bench/opcount.py: the --ops counter classifies ops and counts exactly one optimizer iteration."""
from __future__ import annotations

import pytest
import torch

from bench.opcount import OpCounter, StepWindow


def test_views_allocations_syncs_and_kernels_are_told_apart():
    x = torch.ones(4, 3)
    with OpCounter() as c:
        y = x.view(12)  # a view: no kernel
        z = (y * 2).sum()  # two kernels
        float(z)  # a host sync
        torch.empty(3)  # an allocation: no kernel
        torch.nonzero(x)  # data-dependent shape: a sync
    s = c.summary()
    assert s["view_ops"] == 1 and s["allocations"] == 1
    assert s["host_syncs"] == 2
    assert s["kernel_ops"] == 4  # mul, sum, _local_scalar_dense, nonzero
    assert s["all_ops"] == 6


def test_window_counts_one_whole_iteration_and_stops():
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], fused=True)
    window = StepWindow(start=1).install()
    per_iteration = []
    try:
        with pytest.raises(StepWindow.Finished):
            for _ in range(5):
                loss = (p * 3).sum()
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                per_iteration.append(1)
    finally:
        window.remove()
    assert window.done and len(per_iteration) == 1  # stopped inside the second step
    s = window.counter.summary()
    assert s["host_syncs"] == 0
    assert s["top_ops"].get("_fused_adamw_") == 1 and s["top_ops"].get("mul") == 2  # forward and backward
    assert "_record_function_enter_new" not in s["top_ops"]  # the optimizer's profiler markers are no kernels
