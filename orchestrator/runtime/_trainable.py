"""The Ray Tune function trainable: :func:`orchestrator.trial.run_trial` with Tune reporting and checkpoints.

Ray 2.60 (Train V2): metrics and checkpoints go through ``ray.tune.report``; a restarted trial (after a node
loss or a driver restart) resumes from ``ray.tune.get_checkpoint()``.

Per worker process, not per trial: the sweep runs with ``reuse_actors=True``, so one Ray actor (one process,
its imports done once) runs trial after trial; the dataset comes from Ray's object store (:class:`SharedData`:
the driver reads it once, each node pulls it once, each process deserialises it once and keeps it).

Device: a trial given a GPU by Ray (``resources.gpus`` > 0, fractions included: four trials of ``gpus: 0.25``
share one device) sees that GPU, and only it, through the ``CUDA_VISIBLE_DEVICES`` Ray sets for its actor, and
runs on ``cuda:0`` — the first (for a fraction, the only) device visible to it. Reports carry ``device``,
``gpu_ids`` and ``cuda_visible_devices`` so where a trial ran is on record.
"""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from qshield.data import DatasetBundle

from ..space import SweepSpace
from ..trial import run_trial

log = logging.getLogger(__name__)

#: this process's copy of the sweep's dataset: ``{object id: bundle}``, at most one entry
_DATA: dict[str, DatasetBundle] = {}


@dataclass(frozen=True)
class SharedData:
    """The sweep's dataset, put into Ray's object store once by the driver (``ray.put``).

    :meth:`get` fetches it once per worker process (the node's object store holds one copy per node; the process
    one deserialised copy, kept for the next trials it runs). Trials only read it.
    """

    ref: ray.ObjectRef

    def get(self) -> DatasetBundle:
        key = self.ref.hex()
        bundle = _DATA.get(key)
        if bundle is None:
            _DATA.clear()  # another sweep's dataset: let it go
            bundle = _DATA[key] = ray.get(self.ref)
        return bundle


def trial_device(gpu_ids: list[Any], cuda_available: bool) -> str:
    """Where a trial runs: ``"cuda:0"`` when Ray gave it a GPU (``gpu_ids`` non-empty; Ray restricts
    ``CUDA_VISIBLE_DEVICES`` to it, so it is device 0 of the process) and CUDA works, else ``"cpu"``.

    A GPU that Ray assigned but torch cannot use (a logical GPU of a test cluster, or a CPU build of torch on a
    GPU node) leaves the trial on the CPU, with a warning, and ``device: cpu`` in its reports.
    """
    if not gpu_ids:
        return "cpu"
    if not cuda_available:
        log.warning("Ray assigned GPU(s) %s to this trial, but torch sees no CUDA device (torch %s); running on the "
                    "CPU", gpu_ids, torch.__version__)
        return "cpu"
    return "cuda:0"


def qshield_trainable(config: dict[str, Any], space: SweepSpace, data: SharedData | None = None) -> None:
    """Train and attack one model for the sampled ``config`` of the sweep ``space``.

    ``space`` is the driver's validated :class:`~orchestrator.space.SweepSpace` itself (frozen, pickled by Ray
    with the trainable), parsed once on the driver rather than once per trial.

    ``data``: the sweep's dataset in the object store (None: the trial reads it itself). Every report also
    carries ``node_id`` (the Ray node, hex), ``device`` (see :func:`trial_device`), ``gpu_ids`` (Ray's
    assignment, comma-separated) and ``cuda_visible_devices`` (as the process sees it; empty when unset).
    """
    torch.set_num_threads(max(1, int(space.resources.cpus)))
    # Tune records node_ip/hostname/pid itself, which cannot tell apart two Ray nodes on one host; the node id can.
    context = ray.get_runtime_context()
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    device = trial_device(gpu_ids, torch.cuda.is_available())
    where = {
        "node_id": context.get_node_id(),
        "device": device,
        "gpu_ids": ",".join(gpu_ids),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    }

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        metrics = {**metrics, **where}
        if checkpoint_dir is None:
            tune.report(metrics)
        else:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

    with ExitStack() as stack:
        checkpoint = tune.get_checkpoint()
        resume = Path(stack.enter_context(checkpoint.as_directory())) if checkpoint is not None else None
        bundle = data.get() if data is not None else None
        run_trial(config, space, report, resume_from=resume, bundle=bundle, device=device)
