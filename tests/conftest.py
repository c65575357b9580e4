"""Shared test setup: markers that skip cleanly, fixed seeds, temporary folders."""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a hard requirement
        has_cuda = False
    run_slow = os.environ.get("UNIANIMATE_SLOW") == "1"
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_slow = pytest.mark.skip(reason="slow test: set UNIANIMATE_SLOW=1 to run")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
        if "slow" in item.keywords and not run_slow and not has_cuda:
            item.add_marker(skip_slow)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tests run tiny models: one intra-op thread is several times faster than two on a 2-core CI
    machine (every op otherwise waits for a preempted OpenMP worker). Restored after each test."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
