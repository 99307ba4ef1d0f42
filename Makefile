# dhvtlib: two commands set everything up on a fresh machine: `make demo` and `make test`.
PY      ?= python3.11
VENV    ?= .venv
VPY     := $(VENV)/bin/python
TORCH   := torch==2.14.1 torchvision==0.29.1
STAMP   := $(VENV)/.installed

.PHONY: setup demo test figures benchmark clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q $(TORCH)
	$(VPY) -m pip install -q -e '.[notebooks,dev]'
	touch $(STAMP)

demo: setup
	$(VPY) -m dhvtlib.models.profile

test: setup
	$(VPY) -m pytest -q -n 2 tests

benchmark: setup
	$(VPY) benchmarks/throughput.py --model dhvt_tiny_cifar_patch4

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
