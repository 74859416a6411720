# The two commands of the README: `make demo` and `make test`. Each creates .venv if missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYVER  := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
STAMP  := $(VENV)/.installed
# The kserve SDK cannot share a process with tritonclient.grpc: it gets its own venv, used only
# by the test that checks rendered KServe objects against the SDK's models.
KSERVE_VENV  := .venv-kserve
KSERVE_STAMP := $(KSERVE_VENV)/.installed

.PHONY: demo test lint sysdeps clean

# Debian packages the project uses: the embedded Triton's Python backend stub links the system
# libpython (libpython3.X); the OCI tests run Debian's docker-registry; modelcar images carry a
# static busybox as their shell. Installed only when missing (cheap to check on every run).
sysdeps:
	@missing=""; \
	ldconfig -p | grep -q "libpython$(PYVER).so.1.0" || missing="$$missing libpython$(PYVER)"; \
	command -v docker-registry >/dev/null || missing="$$missing docker-registry"; \
	[ -x /bin/busybox ] || missing="$$missing busybox-static"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[serve,torch,llm,examples,report,k8s,dev]'
	touch $(STAMP)

$(KSERVE_STAMP):
	test -x $(KSERVE_VENV)/bin/python || $(PYTHON) -m venv $(KSERVE_VENV)
	@$(KSERVE_VENV)/bin/python -m pip install -q --disable-pip-version-check kserve==0.21.0 \
	  && touch $(KSERVE_STAMP) \
	  || echo "warning: kserve SDK not installed; the KServe cross-check test will be skipped"

demo: sysdeps $(STAMP)
	$(BIN)/python model_repository/demo.py

# Lint first (seconds), then the suite. pytest exits 5 when it collects no test: that fails too.
test: sysdeps $(STAMP) $(KSERVE_STAMP) lint
	$(BIN)/python -m pytest

# ruff, mypy, and the import-layering check (no upward import, no cycle: docs/architecture.md).
lint: $(STAMP)
	$(BIN)/ruff check toolkit tests benchmarks model_repository python_backends tools
	$(BIN)/ruff format --check toolkit tests benchmarks model_repository python_backends tools
	$(BIN)/mypy
	$(BIN)/python tools/check_layers.py

clean:
	rm -rf dist model_repository/.tritonkit model_repository/dist model_repository/releases $(KSERVE_VENV)
