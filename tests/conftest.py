import os

import pytest
import torch

from fakedata import fake_fashion_mnist

# Each xdist worker gets one intra-op thread: two workers x two threads on two cores oversubscribe OpenMP badly.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _user_cache(tmp_path_factory):
    """Decode caches go to the user's cache directory: in the tests, a temporary one (subprocesses inherit it)."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def fmnist(request, tmp_path_factory):
    """A small fake Fashion-MNIST (16 train / 4 test images per class) in the real idx.gz format, one per test
    module. Other sizes for one test: `@pytest.mark.parametrize("fmnist", [dict(train_per_class=8)], indirect=True)`
    (the dict is passed on to `fakedata.fake_fashion_mnist`)."""
    sizes = {"train_per_class": 16, "test_per_class": 4, **getattr(request, "param", {})}
    return fake_fashion_mnist(tmp_path_factory.mktemp("fmnist"), **sizes)
