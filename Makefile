# cryosr: the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
# CPU machines: the local CPU wheel. GPU machines: make install TORCH="torch==2.13.0 --index-url ..."
TORCH ?= torch==2.13.0
EXTRAS ?= test,cryosparc,scale
BIN = $(VENV)/bin
DEMO_OUT ?= demo_out

.PHONY: install demo test lint clean

install: $(VENV)/.cryosr-installed

$(VENV)/.cryosr-installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools>=64" wheel
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	# the peer Topaz-Denoise, for the benchmarks only (its metadata would pull torchvision and CUDA wheels)
	$(BIN)/python -m pip install -q --no-deps topaz-em==0.3.20
	touch $@

demo: install
	$(BIN)/cryosr demo --out $(DEMO_OUT)

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
