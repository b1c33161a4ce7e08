"""One intra-op thread while these tests run: the models are tiny, and two threads on a busy two-core machine spin
in OpenMP barriers (a 128-px RetinaNet forward: 1.8 s with two threads beside another job, 0.08 s with one)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
