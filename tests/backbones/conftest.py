"""Backbone tests: seeded, without autograd (unless a test re-enables it), one thread.

Inputs here are tiny (32-160 px, batch 1), where a second intra-op thread buys nothing
and, on a shared 2-core machine, OpenMP spin-waiting can make a forward 50x slower.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _quiet_torch():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(threads)
