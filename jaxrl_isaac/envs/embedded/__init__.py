"""The embedded MuJoCo Franka simulator, the project's default env (no Isaac Sim needed, runs on a CPU).

    from jaxrl_isaac.envs import embedded
    env = embedded.make("Embedded-Stack-Cube-Franka-IK-Rel-Visuomotor-v0", num_envs=8)
    obs, extras = env.reset(seed=0)
    obs, reward, terminated, truncated, extras = env.step(torch.zeros(8, 7))

Importing this package picks MuJoCo's OpenGL backend (MUJOCO_GL) if the user has not: "egl" with a visible NVIDIA
GPU, else "osmesa".
"""

from jaxrl_isaac.envs.embedded.gl_backend import configure_gl_backend

configure_gl_backend()  # must run before anything below imports mujoco

from jaxrl_isaac.envs.embedded.franka_env import EmbeddedFrankaEnv  # noqa: E402
from jaxrl_isaac.envs.embedded.parallel import ParallelFrankaEnv  # noqa: E402
from jaxrl_isaac.envs.embedded.tasks import TASK_IDS, task_description  # noqa: E402


def make(task_id: str, num_envs: int, device: str = "cpu", seed: int = 0, table_cam: tuple[int, int] = (200, 200),
         wrist_cam: tuple[int, int] = (200, 200), max_episode_steps: int = 600, group_size: int = 1,
         reward_type: str = "sparse", num_workers: int = 1, **kwargs) -> EmbeddedFrankaEnv | ParallelFrankaEnv:
    """Build an embedded env. ``table_cam``/``wrist_cam`` are (height, width); IsaacLab uses 200x200, RLinf 256x256.

    ``num_workers`` > 1 steps the sub-envs in that many processes (``ParallelFrankaEnv``: same API; worker k is
    seeded ``seed + 1000003 * k``, so episode starts depend on ``num_workers``); 1 steps them in this thread.
    Extra keyword arguments go to the env class (an unknown one raises TypeError naming it).
    """
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
    common = dict(device=device, seed=seed, table_cam=table_cam, wrist_cam=wrist_cam,
                  max_episode_steps=max_episode_steps, group_size=group_size, reward_type=reward_type, **kwargs)
    if num_workers > 1:
        return ParallelFrankaEnv(task_id, num_envs, num_workers=num_workers, **common)
    return EmbeddedFrankaEnv(task_id, num_envs, **common)


def make_expert(task_id: str, env: EmbeddedFrankaEnv | ParallelFrankaEnv):
    """Scripted state-machine expert for ``task_id`` acting in ``env`` (see ``experts``)."""
    from jaxrl_isaac.envs.embedded.experts import make_expert as _make_expert
    return _make_expert(task_id, env)


__all__ = ["EmbeddedFrankaEnv", "ParallelFrankaEnv", "TASK_IDS", "make", "make_expert", "task_description",
           "configure_gl_backend"]
