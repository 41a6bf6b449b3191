"""Simulators behind IsaacLab's env contract (embedded MuJoCo default, optional IsaacLab)."""
