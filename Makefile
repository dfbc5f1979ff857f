# The two set-up commands of the README. Both install what they need first.
PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install -q

# torch first, pinned (the package allows any torch>=2.2, and an unpinned resolve picks the newest).
# By default from the index pip is set up for: on Linux from PyPI that is the default wheel, a CUDA
# build (about 4.7 GB with its nvidia-* libraries) that also runs on CPU. TORCH_INDEX_URL names another
# index to take torch from, e.g. a CPU-only build:
#   make example TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# A torch==2.13.0 already installed (any build, e.g. 2.13.0+cpu) satisfies the pin and is kept.
TORCH_INDEX_URL ?=
TORCH_INSTALL = $(PIP_INSTALL) "torch==2.13.0" $(if $(TORCH_INDEX_URL),--index-url "$(TORCH_INDEX_URL)")

.PHONY: install install-dev browser java job-servers clusters wheel worker-image example test test-busy test-objstore test-runners lint

install:
	$(TORCH_INSTALL)
	$(PIP_INSTALL) -e .

install-dev:
	$(TORCH_INSTALL)
	$(PIP_INSTALL) -e ".[dev]"

# Debian's chromium and chromium-driver, for the HTML gallery test (needs root or sudo).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

# Java 17 and Maven, for the Spark and Flink job servers (Debian's packages; needs root or sudo).
java:
	@command -v java >/dev/null && command -v mvn >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq openjdk-17-jdk-headless maven >/dev/null; }

# Beam's Spark and Flink job servers, resolved from Maven Central once into ~/.cache/grit-pipeline/jars
# (see beam_jobs/job_servers.py; `grit build --runner SparkRunner|FlinkRunner` would fetch them on first use).
job-servers: install java
	$(PYTHON) -m grit_pipeline.beam_jobs.job_servers spark flink

# Spark 3.5.0 and Flink 1.19.1 from PyPI's pyspark / apache-flink distributions, and Beam's Python boot
# program built with Go (github.com/apache/beam/sdks/v2/python/container at the SDK's version), cached in
# ~/.cache/grit-pipeline (see beam_jobs/clusters.py); Go 1.22+ on PATH or at /usr/local/go/bin/go.
clusters: install java
	$(PYTHON) -m grit_pipeline.beam_jobs.clusters spark flink boot

# The project's wheel in dist/, and the SDK worker image on Beam's SDK image (beam_jobs/worker_image/Dockerfile).
IMAGE ?= grit-pipeline-beam:0.1.0
wheel:
	$(PYTHON) -m pip wheel -q --no-deps -w dist .

worker-image: wheel
	docker build -f beam_jobs/worker_image/Dockerfile -t $(IMAGE) .

# The main job: the Beam build on the local runner over the bundled example.
example: install
	grit build --example --detector-fallback tiny-random --mode overwrite --output grit_example_out

test: install-dev browser
	$(PYTHON) -m pytest -q

# The default suite beside BUSY plain Python busy loops (2: both cores of a 2-core machine), RUNS
# times in a row: no test may depend on how fast the machine is. Slower than `make test`, so not in
# .ci/run; the loops are stopped when the suite ends (and end by themselves if this is killed).
BUSY ?= 2
RUNS ?= 1
test-busy: install-dev browser
	$(PYTHON) .ci/under_load.py --busy $(BUSY) --runs $(RUNS)

# Whole builds, re-runs, retries, lock races and every reader on S3 and GCS emulators on 127.0.0.1
# (moto's S3 server, fake-gcs-server; both installed by install-dev; .ci/run runs them).
test-objstore: install-dev
	$(PYTHON) -m pytest -q -m objstore

# The end-to-end builds on the portable, Spark and Flink runners and on the two clusters (.ci/run runs them).
test-runners: install-dev job-servers clusters
	$(PYTHON) -m pytest -q -m runners

lint:
	ruff check . && ruff format --check .
