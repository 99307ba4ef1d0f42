import os

import pytest
import torch

# Each xdist worker gets one intra-op thread: two workers x two threads on two cores oversubscribe OpenMP badly.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
