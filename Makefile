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
# NVIDIA's perf_analyzer, bench's and tune's one meter: the tritonclient 2.51.0 wheel (the embedded
# server's version) ships the binary; it needs libcudart.so.12 (nvidia-cuda-runtime-cu12, no GPU
# used) and Debian's libb64. Its own venv: the project's tritonclient is newer. Required by
# `make demo` (its tune scene) and `make test`.
PERF_VENV  := .venv-perf
PERF_STAMP := $(PERF_VENV)/.installed

.PHONY: demo test lint docs sysdeps clean perf-tools model-analyzer

# Debian packages the project uses: the embedded Triton's Python backend stub links the system
# libpython (libpython3.X); the OCI tests run Debian's docker-registry; modelcar images carry a
# static busybox as their shell; perf_analyzer links libb64; 'tritonkit check --prometheus' is
# tested against Debian's prometheus (started by the test on 127.0.0.1, never as a service); the
# signed-release test checks our signatures with openssl, a verifier we did not write.
# Installed only when missing (cheap to check on every run).
sysdeps:
	@missing=""; \
	ldconfig -p | grep -q "libpython$(PYVER).so.1.0" || missing="$$missing libpython$(PYVER)"; \
	command -v docker-registry >/dev/null || missing="$$missing docker-registry"; \
	[ -x /bin/busybox ] || missing="$$missing busybox-static"; \
	ldconfig -p | grep -q "libb64.so.0d" || missing="$$missing libb64-0d"; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# Every venv installs with --no-compile: byte-compiling all of torch, transformers and kserve at
# install took about half of a fresh install (138 s of .venv on 2 cores, 67 s without); Python
# compiles the modules actually imported on first use (about 30 s of the suite's first
# imports of them, measured).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-compile --disable-pip-version-check -c constraints.txt -e '.[serve,torch,llm,examples,report,k8s,dev]'
	touch $(STAMP)

$(KSERVE_STAMP):
	test -x $(KSERVE_VENV)/bin/python || $(PYTHON) -m venv $(KSERVE_VENV)
	@$(KSERVE_VENV)/bin/python -m pip install -q --no-compile --disable-pip-version-check kserve==0.21.0 \
	  && touch $(KSERVE_STAMP) \
	  || echo "warning: kserve SDK not installed; the KServe cross-check test will be skipped"

$(PERF_STAMP): | sysdeps
	test -x $(PERF_VENV)/bin/python || $(PYTHON) -m venv $(PERF_VENV)
	$(PERF_VENV)/bin/python -m pip install -q --no-compile --disable-pip-version-check "tritonclient==2.51.0" "nvidia-cuda-runtime-cu12>=12,<13"
	LD_LIBRARY_PATH=$$(echo $(PERF_VENV)/lib/python3*/site-packages/nvidia/cuda_runtime/lib) $(PERF_VENV)/bin/perf_analyzer --version
	touch $(PERF_STAMP)

perf-tools: sysdeps $(PERF_STAMP)

# NVIDIA's Model Analyzer, for benchmarks/tune_vs_model_analyzer.py only (not part of make test).
.venv-ma/.installed:
	test -x .venv-ma/bin/python || $(PYTHON) -m venv .venv-ma
	.venv-ma/bin/python -m pip install -q --no-compile --disable-pip-version-check "triton-model-analyzer==1.58.*"
	touch .venv-ma/.installed

model-analyzer: perf-tools .venv-ma/.installed

# GRPC_VERBOSITY: gRPC reads it when first imported, and demo.py imports tritonclient.grpc before
# tritonkit (whose import sets the same default): its own INFO lines (fork_posix.cc) stay out.
demo: sysdeps $(STAMP) $(PERF_STAMP)
	GRPC_VERBOSITY=ERROR $(BIN)/python model_repository/demo.py

# The Debian packages and the three venvs are set up side by side (about 40 s less on a fresh
# 2-core machine than one after another), then lint and the docs site (seconds), then the suite in
# one pass on two pytest-xdist workers: whole modules per worker (--dist loadfile), except that the
# modules that measure time or load run one after another on one worker while the other runs the
# rest (tests/scheduling.py); --no-loadscope-reorder keeps the order given there (the measuring unit
# and the longest modules first). pytest exits 5 when it collects no test: that fails too.
test:
	$(MAKE) --no-print-directory -j4 sysdeps $(STAMP) $(KSERVE_STAMP) $(PERF_STAMP)
	$(MAKE) --no-print-directory lint docs
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

# ruff, mypy, and the import-layering check (no upward import, no cycle: docs/architecture.md).
lint: $(STAMP)
	$(BIN)/ruff check toolkit tests benchmarks model_repository python_backends tools
	$(BIN)/ruff format --check toolkit tests benchmarks model_repository python_backends tools
	$(BIN)/mypy
	$(BIN)/python tools/check_layers.py

# The documentation site (mkdocs.yml, docs/) into site/; --strict: any warning (a broken link, a
# page outside the nav) fails. The CLI and spec references are generated while it builds.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

clean:
	rm -rf site dist model_repository/.tritonkit model_repository/dist model_repository/releases $(KSERVE_VENV) $(PERF_VENV) .venv-ma
