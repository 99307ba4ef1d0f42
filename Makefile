# dhvtlib: two commands set everything up on a fresh machine: `make demo` and `make test`.
PY      ?= python3.11
VENV    ?= .venv
VPY     := $(VENV)/bin/python
TORCH   := torch==2.14.1 torchvision==0.29.1
STAMP   := $(VENV)/.installed

.PHONY: setup data demo test figures benchmark clean

setup: $(STAMP)

# torch/torchvision first (pinned, so pip never pulls another build), then the package with its extras, then the
# Jupyter kernel "dhvtlib" inside .venv (papermill and the notebook tests use it with -k dhvtlib).
$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q $(TORCH)
	$(VPY) -m pip install -q -e '.[notebooks,dev]'
	$(VPY) -m ipykernel install --prefix $(VENV) --name dhvtlib --display-name "dhvtlib (.venv)"
	touch $(STAMP)

# The embedded default data set: Debian's dataset-fashion-mnist where apt works, else torchvision's download.
data: setup
	$(VPY) -m dhvtlib.data fetch-default

# Model table (params and GFLOPs vs the paper), then the quickstart notebook: DHVT vs DeiT on Fashion-MNIST.
demo: setup data
	$(VPY) -m dhvtlib.models.profile
	mkdir -p outputs
	$(VENV)/bin/papermill notebooks/00_quickstart.ipynb outputs/00_quickstart.ipynb -k dhvtlib -p output_dir outputs/results

test: setup
	$(VPY) -m pytest -q -n 2 tests

# Every results table (CSV, Markdown, LaTeX) and figure, and results/report.md, rebuilt from the stored runs under
# results/ (no training; the same runs give the same files).
figures: setup
	$(VPY) -m dhvtlib.report figures --root results

benchmark: setup
	$(VPY) benchmarks/throughput.py --model dhvt_tiny_cifar_patch4 --rounds 7 --json results/benchmarks/throughput_dhvt_tiny_cifar_patch4_fp32.json
	$(VPY) benchmarks/bounds.py --mode train infer --json results/benchmarks/bounds_dhvt_tiny_cifar_patch4_fp32.json
	$(VPY) benchmarks/data_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
