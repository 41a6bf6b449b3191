# One command each, on a fresh machine (everything is installed on first use):
#   make train            # set up, then python -m jaxrl_isaac.train (the embedded default config)
#   make train ARGS="--config-name embedded_stack_cube_ppo_baseline runner.max_epochs=5"
#   make test             # set up, then the whole test suite (what CI runs)
.PHONY: setup train test bench-env

setup:
	@bash scripts/setup.sh

train: setup
	.venv/bin/python -m jaxrl_isaac.train $(ARGS)

test:
	@bash scripts/test.sh $(ARGS)

bench-env: setup
	.venv/bin/python -m jaxrl_isaac.bench env $(ARGS)
