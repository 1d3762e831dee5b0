# `make demo` and `make test` each create (or reuse) .venv, install the package with its extras, then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo
# pip's config here lists local mirrors that may be absent; their warnings are noise.
PIP_FILTER := grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: install demo test test-fast lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]' 2>&1 | $(PIP_FILTER)
	$(PY) -c "import lit_diffsr, torch, lightning, hydra" && touch $(STAMP)

install: $(STAMP)

# ckpt_path=auto: a second `make demo` resumes the first run (finished: nothing to train; interrupted: from its
# newest checkpoint) instead of mixing two. ARGS are overrides for both commands, e.g.
# `make demo ARGS="num_threads=4 trainer.max_steps=400"`.
ARGS ?=
# Without it, libgomp's threads spin while they wait for each other, and on a busy machine a 2-thread step took
# 5x longer than with this setting (README, Quickstart); set OMP_WAIT_POLICY=ACTIVE to keep the spinning.
demo: export OMP_WAIT_POLICY ?= PASSIVE
demo: $(STAMP)
	$(PY) -m lit_diffsr fit experiment=quickstart paths.output_dir=$(DEMO_DIR) ckpt_path=auto $(ARGS)
	$(PY) -m lit_diffsr predict experiment=quickstart paths.output_dir=$(DEMO_DIR) ckpt_path=last $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -m "not e2e"

lint: $(STAMP)
	$(PY) -m ruff check lit_diffsr tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
