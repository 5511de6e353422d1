# MovieLens RecSys — every target does its own set-up, idempotently.
#   make run    one nightly run end to end on the embedded ML-100K
#   make test   the whole test suite
#   make bench  benchmarks (print + JSON under bench/results/)
#   make lint   ruff + hadolint (Dockerfiles)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)
DELTA_JAR := .cache/ivy/jars/io.delta_delta-spark_4.2_2.13-4.4.0.jar
# make run: the night of RUN_DATE on the embedded ML-100K, replayed into the landing zone as daily
# drops (everything before REPLAY_START is one history drop). ML-100K's last ratings are 1998-04-22.
RUN_DATE ?= 1998-04-22
REPLAY_START ?= 1998-04-16
PYTEST_ARGS ?=

.PHONY: run test bench lint venv jars lock clean maintain

venv: $(STAMP)
$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet -c requirements.lock -e ".[dev]" --config-settings editable_mode=compat
	# recbole's own pins conflict with this tree; its imports are patched in model/recbole_compat.py
	$(PY) -m pip install --quiet --no-deps recbole==1.2.1
	rm -f $(VENV)/.installed-*
	touch $@

jars: $(DELTA_JAR)
$(DELTA_JAR): | $(STAMP)
	$(PY) -m recsys.spark --resolve-jars

run: venv jars
	$(PY) -m recsys.datasets replay ml-100k --start $(REPLAY_START) --until $(RUN_DATE)
	$(PY) -m orchestration.nightly --run-date $(RUN_DATE)

# Maintenance of the lake for RUN_DATE: retention of derived tables, OPTIMIZE and VACUUM.
maintain: venv jars
	$(PY) -m spark_jobs.maintenance --run-date $(RUN_DATE)

test: venv jars
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv jars
	$(PY) bench/run_all.py

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint docker/*.Dockerfile

lock: venv
	{ echo "# Full pinned dependency tree (pip freeze of a working install); used as constraints by \`make venv\`."; \
	  echo "# Regenerate: make lock"; \
	  $(PY) -m pip freeze --exclude-editable | grep -v -E '^(recbole|movielens-recsys)=='; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf lake spark-warehouse metastore_db derby.log .pytest_cache
