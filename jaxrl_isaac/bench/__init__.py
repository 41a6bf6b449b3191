"""Benchmarks (never timed unit tests): ``python -m jaxrl_isaac.bench {env,bridge} [args]``."""
