# MovieLens RecSys — every target does its own set-up, idempotently.
#   make run    one nightly run end to end on the embedded ML-100K (the Airflow DAG, `airflow dags test`)
#   make test   the whole test suite
#   make backfill FROM=1998-04-16 TO=1998-04-22   the DAG for each date in order (local SQLite profile)
#   make airflow                                  Airflow locally: api-server, scheduler, dag-processor
#   make bench  benchmarks (print + JSON under bench/results/)
#   make lint   ruff + hadolint (Dockerfiles)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)
RECBOLE_VENV := .venv-recbole
RECBOLE_PY := $(RECBOLE_VENV)/bin/python
RECBOLE_STAMP := $(RECBOLE_VENV)/.installed-$(shell cat peers/recbole/requirements.txt peers/recbole/link_torch.py requirements.lock | sha256sum | cut -c1-16)
DELTA_JAR := .cache/ivy/jars/io.delta_delta-spark_4.2_2.13-4.4.0.jar
# The Spark driver's class-data sharing archive (spark.class_archive), rebuilt with the venv or the jars.
CLASS_ARCHIVE := .cache/spark-cds/driver.jsa
# make run: the night of RUN_DATE on the embedded ML-100K, replayed into the landing zone as daily
# drops (everything before REPLAY_START is one history drop). ML-100K's last ratings are 1998-04-22.
RUN_DATE ?= 1998-04-22
REPLAY_START ?= 1998-04-16
PYTEST_ARGS ?=
# Airflow: metadata DB (SQLite) and logs under airflow_home/ (git-ignored); the profile's
# connections come from configs/airflow/$(PROFILE).env as AIRFLOW_CONN_* environment.
PROFILE ?= local
AIRFLOW_HOME ?= $(CURDIR)/airflow_home
AIRFLOW_PORT ?= 8080
AIRFLOW_ENV := set -a && source configs/airflow/$(PROFILE).env && set +a && \
	export AIRFLOW_HOME=$(AIRFLOW_HOME) AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__PARALLELISM=4 RECSYS_PROFILE=$(PROFILE) \
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH &&
AIRFLOW_DB := $(AIRFLOW_HOME)/.db-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: run test bench lint venv recbole-venv jars lock clean maintain airflow-db backfill airflow airflow-screenshot chromium

venv: $(STAMP)
$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet -c requirements.lock -e ".[dev]" --config-settings editable_mode=compat
	# The embedded ML-100K is a data file of the recbole package: installed for its files only (the
	# product never imports it; RecBole itself runs in its own environment, `make recbole-venv`).
	$(PY) -m pip install --quiet --no-deps recbole==1.2.1
	# The Spark provider's 6.x depends on pyspark-client, which would replace the pinned pyspark:
	# installed without its dependencies (the ones it uses are in the tree already).
	$(PY) -m pip install --quiet --no-deps apache-airflow-providers-apache-spark==6.3.4
	rm -f $(VENV)/.installed-*
	touch $@

# The RecBole peer (peers/recbole): its own venv, every package pinned and installed without
# resolution, rebuilt from scratch when a pin changes; torch is the product venv's, linked in
# (peers/recbole/link_torch.py).
recbole-venv: $(RECBOLE_STAMP)
$(RECBOLE_STAMP): peers/recbole/requirements.txt peers/recbole/link_torch.py $(STAMP)
	rm -rf $(RECBOLE_VENV)
	$(PYTHON_BOOT) -m venv $(RECBOLE_VENV)
	$(RECBOLE_PY) -m pip install --quiet --upgrade pip==25.3
	$(RECBOLE_PY) -m pip install --quiet --no-deps -r peers/recbole/requirements.txt
	$(RECBOLE_PY) -m peers.recbole.link_torch $(VENV)
	touch $@

jars: $(DELTA_JAR) $(CLASS_ARCHIVE)
$(DELTA_JAR): | $(STAMP)
	$(PY) -m recsys.spark --resolve-jars
$(CLASS_ARCHIVE): $(DELTA_JAR) $(STAMP)
	$(PY) -m recsys.spark --build-class-archive

airflow-db: $(AIRFLOW_DB)
$(AIRFLOW_DB): | $(STAMP)
	$(AIRFLOW_ENV) airflow db migrate >/dev/null && \
	airflow pools set "$$($(PY) -c 'from recsys.config import load_config; print(load_config().orchestration.gpu_pool)')" \
		1 "one GPU: training, evaluation and scoring take turns" >/dev/null
	touch $@

# One night: replay ML-100K into the landing zone, run the DAG for RUN_DATE, print what it made.
run: venv jars airflow-db
	$(PY) -m recsys.datasets replay ml-100k --start $(REPLAY_START) --until $(RUN_DATE)
	@echo "airflow dags test recsys_nightly $(RUN_DATE) (about 10 minutes here; log: $(AIRFLOW_HOME)/dags-test-$(RUN_DATE).log)"
	$(AIRFLOW_ENV) airflow dags test recsys_nightly $(RUN_DATE) > $(AIRFLOW_HOME)/dags-test-$(RUN_DATE).log 2>&1 \
		|| { tail -n 60 $(AIRFLOW_HOME)/dags-test-$(RUN_DATE).log; exit 1; }
	$(PY) -m orchestration.nightly --run-date $(RUN_DATE)

# The DAG for each date FROM..TO in order (SQLite allows no concurrent backfill runs).
FROM ?= $(REPLAY_START)
TO ?= $(RUN_DATE)
backfill: venv jars airflow-db
	$(PY) -m recsys.datasets replay ml-100k --start $(REPLAY_START) --until $(TO)
	for day in $$($(PY) -c 'import datetime as d, sys; a, b = map(d.date.fromisoformat, sys.argv[1:]); \
		print(*(a + d.timedelta(n) for n in range((b - a).days + 1)))' $(FROM) $(TO)); do \
		echo "airflow dags test recsys_nightly $$day (log: $(AIRFLOW_HOME)/dags-test-$$day.log)"; \
		$(AIRFLOW_ENV) airflow dags test recsys_nightly $$day > $(AIRFLOW_HOME)/dags-test-$$day.log 2>&1 \
			|| { tail -n 60 $(AIRFLOW_HOME)/dags-test-$$day.log; exit 1; }; \
	done

# Airflow locally (UI on http://localhost:$(AIRFLOW_PORT), user admin, password in
# $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated). Ctrl-C stops all three.
airflow: venv jars airflow-db
	$(AIRFLOW_ENV) trap 'kill 0' EXIT INT TERM; \
	airflow api-server --port $(AIRFLOW_PORT) & airflow scheduler & airflow dag-processor & wait

# Maintenance of the lake for RUN_DATE: retention of derived tables, OPTIMIZE and VACUUM.
maintain: venv jars
	$(PY) -m spark_jobs.maintenance --run-date $(RUN_DATE)

test: venv jars chromium recbole-venv
	$(PY) -m pytest $(PYTEST_ARGS)
	$(RECBOLE_PY) -m pytest peers/recbole -q

# Headless Chromium renders the night's report in the tests (Debian's package, installed when missing).
chromium:
	@command -v chromium >/dev/null || { \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends chromium; }

bench: venv jars recbole-venv
	$(PY) bench/run_all.py

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint docker/*.Dockerfile

# A PNG of recsys_nightly's grid view (after `make run`): a throw-away local Airflow on
# SCREENSHOT_PORT with every user an admin, captured by headless Chromium (Debian's package).
SCREENSHOT ?= docs/img/recsys_nightly_grid.png
SCREENSHOT_PORT ?= 8089
airflow-screenshot: venv jars airflow-db chromium
	$(AIRFLOW_ENV) export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True && \
	log=$(AIRFLOW_HOME)/screenshot-airflow.log && \
	{ airflow api-server --port $(SCREENSHOT_PORT) >> $$log 2>&1 & pids=$$!; \
	  airflow scheduler >> $$log 2>&1 & pids="$$pids $$!"; \
	  airflow dag-processor >> $$log 2>&1 & pids="$$pids $$!"; } && \
	trap 'kill $$pids 2>/dev/null; wait' EXIT && \
	for i in $$(seq 90); do curl -fs localhost:$(SCREENSHOT_PORT)/api/v2/monitor/health >/dev/null && break; sleep 2; done && \
	sleep 20 && mkdir -p $(dir $(SCREENSHOT)) && \
	chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1700,1000 \
		--virtual-time-budget=30000 --screenshot=$(abspath $(SCREENSHOT)) \
		http://localhost:$(SCREENSHOT_PORT)/dags/recsys_nightly 2>/dev/null
	@echo "grid view: $(SCREENSHOT)"

lock: venv
	{ echo "# Full pinned dependency tree (pip freeze of a working install); used as constraints by \`make venv\`."; \
	  echo "# Regenerate: make lock"; \
	  $(PY) -m pip freeze --exclude-editable | grep -v -E '^(recbole|movielens-recsys)=='; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf lake artifacts airflow_home spark-warehouse metastore_db derby.log .pytest_cache
