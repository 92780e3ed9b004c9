# ipclab: make setup, make test-labN, make test. See README.md.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST := $(PY) -m pytest
LABS   := $(sort $(patsubst labs/%/lab.yaml,%,$(wildcard labs/lab*/lab.yaml)))
# Lab runs: quiet dots, no tracebacks (the score table says why), no short summary.
LABFLAGS := -q --tb=no -rN -p no:cacheprovider

.PHONY: setup test test-kit test-reference test-stubs grade image bench student-bundle classroom batch bench-grade worker gradescope demo engine korean-font clean

setup: $(VENV)/.installed korean-font

# Lab 6 draws Korean chart labels (IPCLAB_LANG=ko); without a CJK font matplotlib
# draws empty boxes. Installed when we may (root with apt-get), named otherwise.
KOREAN_FONT := /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc
korean-font:
	@if [ -f $(KOREAN_FONT) ] || fc-list :lang=ko 2>/dev/null | grep -q .; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing a Korean font (fonts-noto-cjk) for lab 6's charts"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-cjk >/dev/null; \
	else \
	  echo "note: no Korean font; lab 6's Korean charts need one: sudo apt-get install fonts-noto-cjk"; \
	fi

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  echo "Python's venv module is missing: run 'apt-get install python3-venv' (as root), then 'make setup' again."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# make test-lab1: lab 1's public tests against your files in labs/lab1_*/.
#   IMPL=dir  test another implementation folder;  V=1  show tracebacks.
test-lab%: setup
	$(PYTEST) $(LABFLAGS) --lab lab$* labs/lab$*_*/tests $(if $(IMPL),--impl $(IMPL)) $(if $(V),-v --tb=short)

# Public and hidden tests of every lab against reference/: each must score 100.
# RUNS=10: check it ten times over (no flaky test, no false leak finding).
test-reference: setup
	$(PY) -m grader selfcheck --expect reference --runs $(or $(RUNS),1)

# Every stub must collect cleanly and score 0.
test-stubs: setup
	$(PY) -m grader selfcheck --expect stub

test-kit: setup
	$(PYTEST) -q tests

test: test-kit test-reference test-stubs

# A Docker engine that answers: when none does, install Debian's docker.io and
# mmdebstrap (needs root) and start dockerd. .ci/run uses it too.
engine:
	@docker info >/dev/null 2>&1 || { \
	  if ! command -v dockerd >/dev/null || ! command -v mmdebstrap >/dev/null; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io mmdebstrap || exit 1; fi; \
	  echo "starting dockerd (log: /tmp/ipclab-dockerd.log)"; \
	  (dockerd >/tmp/ipclab-dockerd.log 2>&1 &); \
	  for i in $$(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done; \
	  docker info >/dev/null 2>&1 || { echo "the Docker engine did not start"; tail -20 /tmp/ipclab-dockerd.log; exit 1; }; }

# make image: build the runner image ipclab-runner:<kit version> (skips when up to date).
image: setup
	$(PY) -m grader image build

# make grade LAB=lab1 SUB=path/to/submission [OUT=dir]: grade one submission in a container.
grade: setup
	@test -n "$(LAB)" -a -n "$(SUB)" || { echo "usage: make grade LAB=lab1 SUB=path [OUT=dir]"; exit 2; }
	$(PY) -m grader grade --lab $(LAB) $(SUB) --out $(or $(OUT),grades/$(LAB)/$(notdir $(basename $(SUB))))

# make batch LAB=lab3 SUBS=path/to/export [OUT=reports/lab3] [JOBS=2] [FORCE=1]
batch: setup
	$(PY) -m grader batch --lab $(LAB) $(SUBS) --out $(or $(OUT),reports/$(LAB)) $(if $(JOBS),--jobs $(JOBS)) $(if $(FORCE),--force)

# Batch throughput, container overhead and parallel efficiency on a generated class.
bench-grade: setup
	$(PY) -m grader.batch bench --lab $(or $(LAB),lab2) --size $(or $(SIZE),12)
	$(PY) -m grader.cluster bench --lab $(or $(LAB),lab2) --size $(or $(SIZE),12)

# make worker SCHEDULER=tcp://HOST:8786: lend this machine to a Dask grading cluster.
worker: setup
	$(PY) -m grader worker --scheduler $(SCHEDULER)

# Course distribution (see grader/distribute.py).
student-bundle: setup
	$(PY) -m grader distribute student-bundle

classroom: setup
	$(PY) -m grader distribute classroom --lab $(LAB)

# make gradescope LAB=lab3: dist/gradescope-lab3.zip, the lab's Gradescope autograder (see grader/gradescope.py).
gradescope: setup
	@test -n "$(LAB)" || { echo "usage: make gradescope LAB=lab3"; exit 2; }
	$(PY) -m grader gradescope --lab $(LAB) --out dist

# make demo: set up, build the runner image, grade a sample class of every lab, print where the summary is.
#   LAB=lab1  only that lab.  Needs a running Docker engine (apt-get install docker.io).
demo: setup engine
	$(PY) -m grader image build
	$(PY) -m grader demo --out reports/demo $(if $(LAB),--lab $(LAB))

# Benchmarks: ratios measured side by side in one run (see grader/bench.py).
bench: setup
	$(PY) -m grader bench
	$(PY) labs/lab3_shm/bench.py --impl $(or $(wildcard reference/lab3_shm),labs/lab3_shm)
	$(PY) -m grader.overhead --lab lab1 --rounds 5

clean:
	rm -rf $(VENV) dist build *.egg-info .pytest_cache
