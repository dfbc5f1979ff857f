# The two set-up commands of the README. Both install what they need first.
PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install -q

.PHONY: install install-dev browser example test lint

install:
	# The CPU wheel of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(PIP_INSTALL) "torch==2.13.0"
	$(PIP_INSTALL) -e .

install-dev:
	$(PIP_INSTALL) "torch==2.13.0"
	$(PIP_INSTALL) -e ".[dev]"

# Debian's chromium and chromium-driver, for the HTML gallery test (needs root or sudo).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

# The main job: the Beam build on the local runner over the bundled example.
example: install
	grit build --example --detector-fallback tiny-random --mode overwrite --output grit_example_out

test: install-dev browser
	$(PYTHON) -m pytest -q

lint:
	ruff check . && ruff format --check .
