# The two commands of the README: `make demo` and `make test`. Each creates .venv if missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYVER  := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
STAMP  := $(VENV)/.installed

.PHONY: demo test lint sysdeps clean

# The embedded Triton's Python backend stub links the system libpython (Debian: libpython3.X).
sysdeps:
	@if ! ldconfig -p | grep -q "libpython$(PYVER).so.1.0"; then \
	  echo "installing libpython$(PYVER) (needed by Triton's Python backend stub)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libpython$(PYVER) >/dev/null; \
	fi

$(STAMP): pyproject.toml constraints.txt
	@$(MAKE) --no-print-directory sysdeps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[serve,torch,report,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python model_repository/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check toolkit tests benchmarks model_repository
	$(BIN)/mypy

clean:
	rm -rf dist model_repository/.tritonkit model_repository/dist
