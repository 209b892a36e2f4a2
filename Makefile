# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap
# .venv first; a second run installs nothing.
PY := .venv/bin/python
STAMP := .venv/.installed
REQS := $(wildcard requirements/*.txt) setup.py

.PHONY: demo demo-synthetic reproduce test test-fast test-slow bench venv clean-venv

venv: $(STAMP)

$(STAMP): $(REQS) scripts/bootstrap.sh
	bash scripts/bootstrap.sh

# Recorded speech where Debian's apt can fetch it (else it says so and runs the
# synthetic demo); demo-synthetic: the synthetic talkers.
demo: $(STAMP)
	$(PY) -m neurocodec_jax.cli.demo

demo-synthetic: $(STAMP)
	$(PY) -m neurocodec_jax.cli.demo --preset demo

# The synthetic demo's recipe, longer: within an hour on 2 CPU cores (docs/research-log.md).
reproduce: $(STAMP)
	$(PY) -m neurocodec_jax.cli.demo --preset reproduce

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15

# The unit tier, for iteration (within 3 minutes on 2 cores).
test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile -m "unit and not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) -m bench

clean-venv:
	rm -rf .venv
