# Set-up and test entry points; the README's two commands are `make run` and `make test`.
# TORCH is what pip installs for PyTorch first. The default is the release this project is tested with;
# a GPU user who already put a CUDA build of their choice into .venv runs `make run TORCH=` to keep it.
VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.14.1 torchvision==0.29.1
PIP = $(VENV)/bin/pip
PIP_FLAGS ?= --quiet --disable-pip-version-check
# The folder `make run` opens: the demo scenes unless ARGS names another folder.
ARGS ?= resources/demo

.PHONY: run test install install-test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

install: $(VENV)/bin/python
	$(if $(strip $(TORCH)),$(PIP) install $(PIP_FLAGS) $(TORCH))
	$(PIP) install $(PIP_FLAGS) -e .

install-test: $(VENV)/bin/python
	$(if $(strip $(TORCH)),$(PIP) install $(PIP_FLAGS) $(TORCH))
	$(PIP) install $(PIP_FLAGS) -e ".[test,ray]"

run: install
	$(VENV)/bin/annotator $(ARGS)

test: install-test
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)
