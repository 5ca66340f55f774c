# Two commands: `make run` (set up everything, load demo data, serve) and
# `make test` (lint and the whole test suite). Both create .venv on first use.
.PHONY: run test setup bench serve

run:
	@scripts/run.sh

test:
	@scripts/test.sh

setup:
	@scripts/setup.sh

serve:
	@scripts/serve.sh

# Benchmarks (PostgreSQL): `make bench SIZE=100k,10m`; see the README's Benchmarks section.
SIZE ?= 100k
bench:
	@scripts/setup.sh && .venv/bin/python -m bench --size $(SIZE)
