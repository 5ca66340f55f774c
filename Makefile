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
