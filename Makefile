# The README's two commands: `make app` (the desktop app on the shipped model) and `make test`.
# Both create .venv here and install what they need; nothing else has to be set up by hand.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install -q --disable-pip-version-check

.PHONY: app test dev lint xvfb clean mutation

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The light app: numpy, pillow, onnxruntime. No PyTorch.
$(VENV)/.app: pyproject.toml | $(BIN)/python
	$(PIP) -e .
	@touch $@

# Everything: the training extra (PyTorch), drag and drop, plots, test tools, and the Triton server
# for `cifar10 serve` (its PyTriton part installs on Linux x86-64 only; elsewhere those tests skip).
$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[train,dnd,dev,serve]'
	@touch $@ $(VENV)/.app

app: $(VENV)/.app
	$(BIN)/cifar10 gui $(IMAGE)

dev: $(VENV)/.dev

# Tests run in as many processes as there are cores (pytest-xdist; JOBS=1 for one process). Even
# on two cores that pays: one test's imports, process start-ups and graph export, single-threaded,
# overlap another's arithmetic. `--dist worksteal` keeps both busy to the end despite a few long tests.
JOBS ?= auto

test: $(VENV)/.dev xvfb
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n $(JOBS) --dist worksteal

# Mutation testing (mutmut) of the torch-free core and the exporter's numpy parts; slow, not in CI.
# tools/mutation.py lays the package out as installed in build/mutation, runs mutmut there and
# prints the score and every mutant not killed. One file: make mutation ONLY=runtime/preprocess.py
mutation: $(VENV)/.dev
	nice -n 10 $(BIN)/python tools/mutation.py $(if $(ONLY),--only $(ONLY))

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The GUI tests drive real Tk windows on a virtual screen.
xvfb:
	@if command -v Xvfb >/dev/null && command -v xdotool >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing xvfb and xdotool for the GUI tests"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q xvfb xdotool x11-apps imagemagick >/dev/null \
		|| { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q xvfb xdotool x11-apps imagemagick >/dev/null; }; \
	else \
		echo "note: GUI tests need Xvfb and xdotool (sudo apt-get install xvfb xdotool); they will be skipped"; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
