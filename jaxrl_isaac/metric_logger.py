"""Scalar logging to the backends named in ``runner.logger.logger_backends`` plus a JSONL file.

* tensorboard: tensorboardX event files in ``<log_path>/tensorboard``.
* wandb: ``wandb.init(project, name, dir=log_path)``; works offline with ``WANDB_MODE=offline``.
* swanlab: ``swanlab.init(project, experiment_name, logdir=log_path)``.
* always: ``<log_path>/metrics.jsonl``, one JSON object per step (what tests and resume checks read).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Sequence

KNOWN_BACKENDS = ("tensorboard", "wandb", "swanlab")


class LoggerBackendError(RuntimeError):
    pass


class MetricLogger:
    def __init__(self, log_path: str | Path, project_name: str, experiment_name: str, backends: Sequence[str],
                 config: dict | None = None):
        self.log_path = Path(log_path)
        self.log_path.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.log_path / "metrics.jsonl", "a")
        self._tb = self._wandb = self._swanlab = None
        for name in backends:
            if name not in KNOWN_BACKENDS:
                raise LoggerBackendError(f"runner.logger.logger_backends: unknown backend {name!r}; "
                                         f"known: {', '.join(KNOWN_BACKENDS)}")
        if "tensorboard" in backends:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(str(self.log_path / "tensorboard"))
        if "wandb" in backends:
            try:
                import wandb
            except ImportError:
                raise LoggerBackendError("runner.logger.logger_backends includes 'wandb' but wandb is not "
                                         "installed: pip install 'jaxrl_isaac[wandb]' (or drop the backend)") from None
            self._wandb = wandb.init(project=project_name, name=experiment_name, dir=str(self.log_path),
                                     config=config)
        if "swanlab" in backends:
            try:
                import swanlab
            except ImportError:
                raise LoggerBackendError("runner.logger.logger_backends includes 'swanlab' but swanlab is not "
                                         "installed: pip install 'jaxrl_isaac[swanlab]' (or drop the backend)") from None
            self._swanlab = swanlab
            swanlab.init(project=project_name, experiment_name=experiment_name, logdir=str(self.log_path),
                         config=config)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        clean = {k: float(v) for k, v in metrics.items()}
        self._jsonl.write(json.dumps({"step": step, **{k: (v if math.isfinite(v) else str(v))
                                                        for k, v in clean.items()}}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in clean.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(clean, step=step)
        if self._swanlab is not None:
            self._swanlab.log(clean, step=step)

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._swanlab is not None:
            self._swanlab.finish()
