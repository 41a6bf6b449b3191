"""RL algorithms as pure JAX functions (advantages, PPO/GRPO losses)."""
