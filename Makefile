# streamlib developer commands.
#
#   make demo        install the package into .venv and run examples/quickstart.py
#   make test        install with the dev extras and run the whole test suite
#   make typecheck   run mypy over streamlib/ and examples/
#   make bench       run every benchmarks/bench_*.py in turn
#   make annotate    rebuild the Cython modules with annotated HTML reports
#   make wheel       build dist/: the sdist and a manylinux wheel (auditwheel), twine-checked
#   make clean       remove build products (keeps .venv)
#   make distclean   clean, and remove .venv too
#
# The virtualenv is created with $(PYTHON) (default python3).  Installs are
# editable, with the Cython extensions compiled in place next to their .pyx;
# they are redone only when pyproject.toml, setup.py or a streamlib/_native
# source file changed.  Extra pytest arguments: make test PYTEST_ARGS='-k foo'.

SHELL := /bin/bash
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV ?= .venv
VENV_PY := $(VENV)/bin/python
PIP := $(VENV_PY) -m pip
PIP_INSTALL := $(PIP) install -q
PYTEST_ARGS ?=

export PIP_DISABLE_PIP_VERSION_CHECK := 1

NATIVE_SRC := $(sort $(wildcard streamlib/_native/*.pyx streamlib/_native/*.pxd streamlib/_native/*.pxi))
# Records the set of native source files, so that adding or removing one
# (not only editing it) triggers a rebuild.
NATIVE_LIST := $(VENV)/.streamlib-native-sources
STAMP_BASE := $(VENV)/.streamlib-installed
STAMP_DEV := $(VENV)/.streamlib-installed-dev
INSTALL_INPUTS := pyproject.toml setup.py $(NATIVE_SRC) $(NATIVE_LIST)
# Warns (one line) when a .pyx has no up-to-date compiled module beside it.
CHECK_NATIVE := @$(VENV_PY) scripts/check_native.py

.PHONY: help demo test typecheck bench annotate wheel install install-dev clean distclean FORCE

help:
	@sed -n '3,11s/^# \{0,1\}//p' $(firstword $(MAKEFILE_LIST))

$(VENV_PY):
	$(PYTHON) -m venv $(VENV)

$(NATIVE_LIST): FORCE | $(VENV_PY)
	@echo '$(NATIVE_SRC)' | cmp -s - $@ 2>/dev/null || echo '$(NATIVE_SRC)' > $@

$(STAMP_BASE): $(INSTALL_INPUTS) | $(VENV_PY)
	$(PIP_INSTALL) -e .
	@touch $@

$(STAMP_DEV): $(INSTALL_INPUTS) | $(VENV_PY)
	$(PIP_INSTALL) -e '.[dev]'
	@touch $@ $(STAMP_BASE)

install: $(STAMP_BASE)
install-dev: $(STAMP_DEV)

demo: $(STAMP_BASE)
	$(CHECK_NATIVE)
	$(VENV_PY) examples/quickstart.py

test: $(STAMP_DEV)
	$(CHECK_NATIVE)
	$(VENV_PY) -m pytest $(PYTEST_ARGS)

typecheck: $(STAMP_DEV)
	$(VENV_PY) -m mypy $(wildcard streamlib examples)

bench: $(STAMP_BASE)
	$(CHECK_NATIVE)
	@benches='$(sort $(wildcard benchmarks/bench_*.py))'; \
	if [ -z "$$benches" ]; then echo "no benchmarks/bench_*.py found" >&2; exit 1; fi; \
	for b in $$benches; do \
		echo "== $$b"; \
		$(VENV_PY) $$b || exit $$?; \
	done

annotate: $(STAMP_BASE)
	STREAMLIB_ANNOTATE=1 $(PIP_INSTALL) --no-deps -e .
	@ls -1 streamlib/_native/*.html 2>/dev/null || echo "no streamlib/_native/*.pyx to annotate"

# Built with $(PYTHON) in a tools venv under build/ (never .venv); see scripts/build_dist.py.
wheel:
	$(PYTHON) scripts/build_dist.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .hypothesis
	@for pyx in streamlib/_native/*.pyx; do \
		[ -e "$$pyx" ] || continue; \
		base="$${pyx%.pyx}"; \
		rm -f "$$base.c" "$$base.cpp" "$$base.html"; \
	done
	find streamlib -name '*.so' -delete 2>/dev/null || true
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} + 2>/dev/null || true
	rm -f $(STAMP_BASE) $(STAMP_DEV) $(NATIVE_LIST)

distclean: clean
	rm -rf $(VENV)
