"""One intra-op thread for these tests: on a shared 2-core machine, two OpenMP threads competing with other jobs
run 5-10× slower than one (spin-waiting), while the tiny networks here gain little from a second thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
