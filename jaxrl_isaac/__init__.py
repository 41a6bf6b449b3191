"""jaxrl_isaac: RL fine-tuning of vision-language-action policies in JAX, against IsaacLab's env contract."""

__version__ = "0.1.0"
