"""Classical post-processing shared by all backends: a symmetric readout bit-flip on every measured qubit."""

from __future__ import annotations

import torch

from ._spec import CircuitSpec, Measurement


def apply_readout(out: torch.Tensor, spec: CircuitSpec) -> torch.Tensor:
    """Apply a symmetric readout flip of probability ``spec.readout_error`` to a measured output.

    For ``probs`` each wire's bit is flipped independently with probability r: the distribution is multiplied
    on every wire by the confusion matrix ``[[1-r, r], [r, 1-r]]``. For ``expval`` this scales ``<Z_q>`` by
    ``1 - 2r``.
    """
    r = spec.readout_error
    if r == 0.0:
        return out
    if spec.measurement is Measurement.EXPVAL:
        return out * (1.0 - 2.0 * r)
    n = spec.n_qubits
    confusion = torch.tensor([[1.0 - r, r], [r, 1.0 - r]], dtype=out.dtype, device=out.device)
    probs = out.reshape((out.shape[0],) + (2,) * n)
    for q in range(n):
        probs = torch.movedim(torch.tensordot(probs, confusion, dims=([q + 1], [1])), -1, q + 1)
    return probs.reshape(out.shape)
