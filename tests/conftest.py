import os

import pytest
import torch

from fakedata import fake_fashion_mnist

# Each xdist worker gets one intra-op thread: two workers x two threads on two cores oversubscribe OpenMP badly.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    """A small fake Fashion-MNIST (16 train / 4 test images per class) in the real idx.gz format."""
    return fake_fashion_mnist(tmp_path_factory.mktemp("fmnist"), train_per_class=16, test_per_class=4)
