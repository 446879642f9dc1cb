# Everything runs with the project's own venv; a fresh machine needs only python3 (3.11) and pip.
# Dependencies come from the committed requirements.lock (regenerate it with `make lock`
# after changing dependencies in pyproject.toml: `make venv` removes whatever the lock lacks).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV := $(BIN)/python -m uv
UV_VERSION ?= 0.13.9
STAMP := $(VENV)/.installed
START ?= 2013-01
END ?= 2013-06
SAMPLE ?=
MONITOR ?= 2013-07 2013-08 2013-09

.PHONY: venv lock up down status seed train serve demo demo-monitor replay test test-tools reliability lint bench bench-tools bench-serving bench-drift

venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(BIN)/uv: | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# Re-runs only when the lock or the project metadata changed, so `make test` stays fast.
$(STAMP): requirements.lock pyproject.toml | $(BIN)/uv
	$(UV) pip sync --python $(BIN)/python requirements.lock
	$(UV) pip install --python $(BIN)/python --no-deps -e .
	touch $@

lock: | $(BIN)/uv
	$(UV) pip compile pyproject.toml --extra dev --extra boosting --python-version 3.11 -o requirements.lock

up: venv
	$(BIN)/mlops up

# No venv prerequisite: stopping must not wait for a reinstall.
down:
	$(BIN)/mlops down

status: venv
	$(BIN)/mlops status

seed: venv
	$(BIN)/mlops seed $(if $(SAMPLE),--sample $(SAMPLE))

train: venv
	$(BIN)/mlops train --start $(START) --end $(END)

serve: venv
	$(BIN)/mlops serve

# Train on January–June, let the gates judge the new version on July (exit 2 = the gates
# rejected it, which is a result, not an error), monitor the months after it against the
# champion's data, and send the prediction service (started by `mlops up`) a sample request.
demo: venv up seed
	$(BIN)/mlops train --start 2013-01 --end 2013-06
	$(BIN)/mlops promote --eval-period 2013-07 || [ $$? -eq 2 ]
	@$(MAKE) --no-print-directory demo-monitor
	$(BIN)/mlops predict --period 2013-08 --rows 3

# The months after the demo's training, each against the champion (exit 3: retrain, 4: cannot
# judge); each prints where its report is (MLflow run, HTML report, Evidently dashboard).
demo-monitor: venv up
	@for period in $(MONITOR); do \
		$(BIN)/mlops monitor --period $$period; code=$$?; \
		case $$code in 0|3|4) ;; *) exit $$code ;; esac; \
	done

replay: venv up
	$(BIN)/mlops replay --start 2013-01 --end 2013-12

# Lint first (seconds): a style slip fails here, named, before the half-hour suite runs.
test: venv lint test-tools
	$(BIN)/pytest -q tests -m "not long" --durations=25

# Faults injected against the real components, the long load test included; prints the table
# (fault, runs, invariant violations, rows lost), written as JSON and Markdown to
# RELIABILITY_REPORT=path.json if given, else into the pytest temp folder (the path is printed).
RELIABILITY_REPORT ?=
reliability: venv
	$(if $(RELIABILITY_REPORT),RELIABILITY_REPORT=$(abspath $(RELIABILITY_REPORT))) $(BIN)/pytest -q tests/reliability

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Every section in its own process → bench/REPORT.md and bench/plots/ (raw JSON and logs in
# bench/results/, git-ignored). Hours at full size; `SECTIONS="validation drift"` picks some.
SECTIONS ?=
bench: venv bench-tools
	nice -n 19 $(BIN)/python bench/run.py $(if $(SECTIONS),--sections $(SECTIONS))

bench-serving: venv bench-tools
	$(BIN)/python bench/serving.py

# wrk (Debian's package) loads the servers from C: an asyncio load generator in Python takes
# a core of the two the servers need. Without root or apt, the bench falls back to httpx.
# The web page test drives a real headless browser: Debian's chromium (playwright cannot
# download its own browsers here). Installed once; without root or apt it must be there already.
test-tools:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		(apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)); } || \
		{ echo "chromium is not installed (apt-get install chromium): the web page test needs it"; exit 1; }

bench-tools:
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		(apt-get install -y -q wrk >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null)); } || \
		echo "wrk is not installed (apt-get install wrk): the serving benchmark uses httpx instead"

bench-drift: venv
	$(BIN)/python bench/drift.py
