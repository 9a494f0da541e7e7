PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEMO := runs/demo

.PHONY: venv demo test lint clean

venv: $(BIN)/seqedge

# torch is pinned and installed first (the machine holds a CPU wheel of exactly this version), so no
# other requirement can pull a CUDA build of torch.
$(BIN)/seqedge: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

# The main job on the built-in default: train the default family's small preset, export it to ONNX
# (verified against PyTorch), show the manifest, generate text through onnxruntime, and benchmark it:
# measured here, projected for a Pixel 8.
demo: venv
	$(BIN)/seqedge train --minutes 3 --out $(DEMO) --force
	$(BIN)/seqedge export $(DEMO) --format onnx --out $(DEMO)-onnx --force
	$(BIN)/seqedge inspect $(DEMO)-onnx
	$(BIN)/seqedge generate $(DEMO)-onnx --prompt "class Foo:" --max-new-tokens 300 --temperature 0.8
	$(BIN)/seqedge bench $(DEMO)-onnx --device pixel8 --prompt-lengths 64,256 --decode-tokens 64

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check seqedge exporters runtimes tests benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info runs
