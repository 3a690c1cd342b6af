# make run: set up (once) and run the default job; make test: set up (once), lint (ruff), run the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
FMNIST_DIR := /usr/share/datasets/fashion-mnist
FMNIST_DEB := dataset-fashion-mnist

.PHONY: setup data run test

setup: $(STAMP) data

# The virtual environment, the pinned packages and the project itself (editable: `import ptq` from anywhere),
# again only when requirements.txt or pyproject.toml is newer than the stamp.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install -e .
	touch $@

# Fashion-MNIST from Debian's package where apt-get exists and we are root; otherwise (or if apt fails) the
# loader falls back to torchvision's download, and says how to get the data when that fails too.
data:
	@if [ ! -d $(FMNIST_DIR) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing the Debian package $(FMNIST_DEB) into $(FMNIST_DIR)"; \
		( apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(FMNIST_DEB) ) \
			|| echo "warning: apt-get could not install $(FMNIST_DEB); Fashion-MNIST will be downloaded by torchvision if the network allows"; \
	fi

run: setup
	$(PY) run.py

test: setup
	$(PY) -m ruff check .
	WANDB_MODE=$${WANDB_MODE:-disabled} $(PY) -m pytest -q
