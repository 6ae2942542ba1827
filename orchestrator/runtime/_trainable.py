"""The Ray Tune function trainable: :func:`orchestrator.trial.run_trial` with Tune reporting and checkpoints.

Ray 2.60 (Train V2): metrics and checkpoints go through ``ray.tune.report``; a restarted trial (after a node
loss or a driver restart) resumes from ``ray.tune.get_checkpoint()``.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from ..space import parse_space
from ..trial import run_trial


def qshield_trainable(config: dict[str, Any], space_dict: dict[str, Any]) -> None:
    """Train and attack one model for the sampled ``config`` of the sweep described by ``space_dict``.

    Every report also carries ``node_id``, the Ray node the trial ran on (hex string).
    """
    space = parse_space(space_dict, source="<sweep space>")
    torch.set_num_threads(max(1, int(space.resources.cpus)))
    # Tune records node_ip/hostname/pid itself, which cannot tell apart two Ray nodes on one host; the node id can.
    node_id = ray.get_runtime_context().get_node_id()

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        metrics = {**metrics, "node_id": node_id}
        if checkpoint_dir is None:
            tune.report(metrics)
        else:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

    with ExitStack() as stack:
        checkpoint = tune.get_checkpoint()
        resume = Path(stack.enter_context(checkpoint.as_directory())) if checkpoint is not None else None
        run_trial(config, space, report, resume_from=resume)
