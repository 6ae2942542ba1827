"""Batched torch simulator: statevector (noiseless) and Pauli-basis density matrix (noisy), CPU or CUDA.

Everything is ordinary torch autograd (float32 or float64, CPU or CUDA): no per-sample Python loop, nothing
detached, differentiable (also twice) w.r.t. the input angles and the weights.

Representations

* **noiseless**: a complex statevector ``psi [B, 2^n]`` (wire 0 = most significant bit);
* **noisy**: the density matrix in the **Pauli basis**, ``c[s] = Tr(P_s rho)`` for the ``4^n`` Pauli strings
  ``P_s`` (per wire ``I, X, Y, Z`` = digit 0..3, wire 0 most significant), i.e. ``rho = 2^-n sum_s c_s P_s``.
  This is a real "state with local dimension 4" (the interleaved (row, column) vectorisation of ``rho`` followed
  by a fixed per-wire change of basis): a single-qubit unitary or channel acts on one wire's digit as its real
  4x4 Pauli transfer matrix (PTM) ``R[i, j] = Tr(P_i Phi(P_j)) / 2``; a rotation's PTM is ``diag(1, SO(3))``,
  so all the arithmetic is real. A product state is the Kronecker product of the per-qubit ``(1, Bloch
  vector)``. A CNOT maps Pauli strings to Pauli strings up to a sign: a precomputed signed permutation.
  Measurement: ``p_k = 2^-n sum_s c_s prod_q m[k_q, s_q]`` with ``m = [[1, 0, 0, 1], [1, 0, 0, -1]]`` (a
  per-wire ``2 x 4`` map); ``<Z_q> = c[Z on q, I elsewhere]``.

How it is fast

* the encoding is a product state in closed form: per qubit the two amplitudes (noiseless) or the Bloch vector
  (noisy) of ``RZ RY RX |0>``; the first layer's trainable rotations act on those per-qubit factors before the
  product is formed (they cost nothing per basis state); the product is built as a balanced tree;
* every per-qubit operation is applied to groups of wires as Kronecker blocks of at most ``2^group_size`` rows
  (``group_size`` wires of a statevector, ``group_size // 2`` wires of a Pauli-basis density matrix; default
  ``group_size=5``); a block acts on the *trailing* wires as one GEMM ``state.reshape(-1, d) @ M.T`` and the
  wire order is then rotated (one transpose) so the next block's wires become trailing; after a full cycle the
  order is restored, except that the last rotation is folded into the following CNOT gather;
* the noise of layer ``l`` and the rotations of layer ``l + 1`` are adjacent: one merged PTM per qubit; the last
  layer's noise is merged into the measurement map;
* a CNOT pattern is one gather whose backward is the inverse gather (no scatter-add); the last one of a
  noiseless circuit is applied to the real probabilities (or folded into the ``Z`` signs for ``expval``).

Noisy specs with ``simulation="trajectories"`` are simulated by quantum trajectories on statevectors instead of the
density matrix (``_trajectories.py``: unbiased Monte-Carlo estimates of the outputs and their gradients, drawn from
the ``generator`` passed to :meth:`TorchBackend.run`); they use the statevector's constants and the Schrödinger
path.

Two ways to evaluate (option ``method``)

* ``schrodinger``: propagate each sample's state through the layers; cost proportional to the batch ``B``.
* ``heisenberg``: the weights are shared by the batch, so everything after the (per-sample) encoding is built
  once per call and contracted with the encoded product states. Noisy: the ``K`` measured observables (``2^n``
  projectors for ``probs``, ``n`` ``Z_q`` for ``expval``) are propagated backwards through the adjoint layers
  (a ``[K, 4^n]`` matrix; the adjoint of a PTM is its transpose, the adjoint of a signed permutation is its
  inverse; the last layer's noise and CNOTs are weight-free, so that part is a constant), then
  ``out = c_1 @ O.T`` with ``c_1`` the encoded product state. Noiseless: the unitary ``T [2^n, 2^n]`` of the
  circuit after the first layer's rotations is built by propagating the ``2^n`` basis states, then
  ``psi = psi_1 @ T``. Cost independent of ``B`` plus one ``B x D x K`` contraction.
* ``auto`` (default): per call, the path with the smaller estimated number of multiply-adds
  (:meth:`TorchBackend.estimated_cost`): roughly, ``heisenberg`` wins when the batch is larger than the number
  of propagated rows (``K`` or ``2^n``), e.g. small noisy circuits at training batch sizes.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from qshield.schema import Choice

from .._spec import CircuitSpec, Measurement, kraus_operators
from ._base import Backend

_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}

#: Heisenberg matrices larger than this many entries are refused when the method is forced (``auto`` never
#: picks such a path): 2^28 entries are 2 GiB in float64, 4 GiB in complex128.
MAX_HEISENBERG_ENTRIES = 2**28

_PAULIS = np.array([[[1, 0], [0, 1]], [[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]], dtype=np.complex128)


class Method(Choice):
    """How :class:`TorchBackend` evaluates the circuit (see the module docstring)."""

    AUTO = "auto"
    SCHRODINGER = "schrodinger"
    HEISENBERG = "heisenberg"


# ----------------------------------------------------------------------------------------------------------
# single-qubit pieces
# ----------------------------------------------------------------------------------------------------------


def euler_unitaries(angles: torch.Tensor) -> torch.Tensor:
    """``RZ(a[...,2]) RY(a[...,1]) RX(a[...,0])`` for real ``angles[..., 3]`` -> ``[..., 2, 2]`` complex.

    Closed form with half angles ``x, y, z`` and ``p = cy cx, q = sy sx, r = sy cx, t = cy sx``:
    ``[[e^{-iz}(p + iq), -e^{-iz}(r + it)], [e^{iz}(r - it), e^{iz}(p - iq)]]``.
    """
    c = torch.cos(angles / 2)
    s = torch.sin(angles / 2)
    cx, cy, cz = c.unbind(-1)
    sx, sy, sz = s.unbind(-1)
    p, q, r, t = cy * cx, sy * sx, sy * cx, cy * sx
    # e^{-iz}(p + iq) = (cz p + sz q) + i (cz q - sz p); e^{-iz}(r + it) = (cz r + sz t) + i (cz t - sz r)
    a_re, a_im = cz * p + sz * q, cz * q - sz * p
    b_re, b_im = cz * r + sz * t, cz * t - sz * r
    real = torch.stack([a_re, -b_re, b_re, a_re], -1)
    imag = torch.stack([a_im, -b_im, -b_im, -a_im], -1)
    return torch.complex(real, imag).reshape(*angles.shape[:-1], 2, 2)


def encoded_amplitudes(angles: torch.Tensor) -> torch.Tensor:
    """``RZ(a2) RY(a1) RX(a0) |0>`` for real ``angles[..., 3]`` -> ``[..., 2]`` complex (first column above)."""
    c = torch.cos(angles / 2)
    s = torch.sin(angles / 2)
    cx, cy, cz = c.unbind(-1)
    sx, sy, sz = s.unbind(-1)
    p, q, r, t = cy * cx, sy * sx, sy * cx, cy * sx
    real = torch.stack([cz * p + sz * q, cz * r + sz * t], -1)
    imag = torch.stack([cz * q - sz * p, sz * r - cz * t], -1)
    return torch.complex(real, imag)


def bloch_rotations(angles: torch.Tensor) -> torch.Tensor:
    """SO(3) rotation of the Bloch vector by ``RZ(a2) RY(a1) RX(a0)``: ``angles[..., 3]`` -> ``[..., 3, 3]`` real.

    ``RX(t) = exp(-i t X / 2)`` rotates the Bloch vector by ``t`` about x (right-handed), and so on; the result
    is ``Rz(a2) Ry(a1) Rx(a0)``.
    """
    c = torch.cos(angles)
    s = torch.sin(angles)
    ca, cb, cc = c.unbind(-1)
    sa, sb, sc = s.unbind(-1)
    sbsa, sbca = sb * sa, sb * ca
    entries = [
        cc * cb, cc * sbsa - sc * ca, cc * sbca + sc * sa,
        sc * cb, sc * sbsa + cc * ca, sc * sbca - cc * sa,
        -sb, cb * sa, cb * ca,
    ]  # fmt: skip
    return torch.stack(entries, -1).reshape(*angles.shape[:-1], 3, 3)


def encoded_bloch_vectors(angles: torch.Tensor) -> torch.Tensor:
    """Bloch vector of ``RZ(a2) RY(a1) RX(a0) |0>``: ``angles[..., 3]`` -> ``[..., 3]`` (third column above)."""
    c = torch.cos(angles)
    s = torch.sin(angles)
    ca, cb, cc = c.unbind(-1)
    sa, sb, sc = s.unbind(-1)
    sbca = sb * ca
    return torch.stack([cc * sbca + sc * sa, sc * sbca - cc * sa, cb * ca], -1)


def channel_ptm(kind: str, p: float) -> np.ndarray:
    """Real 4x4 Pauli transfer matrix ``R[i, j] = Tr(P_i Phi(P_j)) / 2`` of a single-qubit channel (float64)."""
    ks = np.array(kraus_operators(kind, p), dtype=np.complex128)
    images = np.einsum("kab,jbc,kdc->jad", ks, _PAULIS, ks.conj())  # Phi(P_j)
    ptm = np.einsum("iba,jab->ij", _PAULIS, images) / 2
    return np.ascontiguousarray(ptm.real)


# ----------------------------------------------------------------------------------------------------------
# CNOT patterns
# ----------------------------------------------------------------------------------------------------------


def cnot_permutation(n_qubits: int, pairs: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """Index map ``idx`` with ``(C psi)[j] = psi[idx[j]]`` for the CNOT sequence ``pairs`` (wire 0 = MSB)."""
    idx = torch.arange(2**n_qubits)
    k = torch.arange(2**n_qubits)
    for control, target in pairs:
        cbit = 1 << (n_qubits - 1 - control)
        tbit = 1 << (n_qubits - 1 - target)
        idx = idx[torch.where((k & cbit) != 0, k ^ tbit, k)]
    return idx


def _cnot_pauli_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``CNOT (P_a x P_b) CNOT = sign * P_a' x P_b'`` (control first) as arrays ``a'[a, b], b'[a, b], sign[a, b]``."""
    cnot = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=np.complex128)
    basis = np.einsum("aij,bkl->abikjl", _PAULIS, _PAULIS).reshape(4, 4, 4, 4)  # P_a x P_b
    a2 = np.zeros((4, 4), dtype=np.int64)
    b2 = np.zeros((4, 4), dtype=np.int64)
    sign = np.zeros((4, 4))
    for a in range(4):
        for b in range(4):
            image = cnot @ basis[a, b] @ cnot
            coeff = np.einsum("cdij,ij->cd", basis.conj(), image).real / 4  # Tr(P^dagger image) / 4
            (a2[a, b], b2[a, b]) = np.argwhere(np.abs(coeff) > 0.5)[0]
            sign[a, b] = coeff[a2[a, b], b2[a, b]]
    return a2, b2, sign


def cnot_pauli_map(n_qubits: int, pairs: tuple[tuple[int, int], ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed permutation ``(C c)[s] = sign[s] * c[idx[s]]`` of Pauli-basis coefficients for the CNOT sequence.

    ``c[s] = Tr(P_s rho)``; with ``rho' = C rho C^dagger``: ``c'[s] = Tr(C^dagger P_s C rho)`` and
    ``C^dagger P_s C = sign * P_idx[s]``. Returns ``idx`` (``[4^n]``, int32, or int64 from 16 qubits) and
    ``sign`` (``[4^n]``, int8, +-1).
    """
    n = n_qubits
    itype = _index_dtype(4**n)
    a2, b2, sgn = _cnot_pauli_table()
    a2_t, b2_t = torch.as_tensor(a2, dtype=itype), torch.as_tensor(b2, dtype=itype)
    sgn_t = torch.as_tensor(sgn, dtype=torch.int8)
    s = torch.arange(4**n, dtype=itype)
    idx = s.clone()
    sign = torch.ones(4**n, dtype=torch.int8)
    for control, target in pairs:
        wc, wt = 4 ** (n - 1 - control), 4 ** (n - 1 - target)
        dc, dt = (s // wc) % 4, (s // wt) % 4
        gate = s + (a2_t[dc, dt] - dc) * wc + (b2_t[dc, dt] - dt) * wt
        sign = sgn_t[dc, dt] * sign[gate]
        idx = idx[gate]
    return idx, sign


def _index_dtype(size: int) -> torch.dtype:
    """int32 index maps where they fit (half the memory of int64 for big density matrices)."""
    return torch.int32 if size < 2**31 else torch.int64


# ----------------------------------------------------------------------------------------------------------
# grouped Kronecker application
# ----------------------------------------------------------------------------------------------------------


def wire_groups(n_wires: int, max_width: int) -> tuple[int, ...]:
    """Split ``n_wires`` consecutive wires into the fewest groups of at most ``max_width``, sizes balanced."""
    k = -(-n_wires // max_width)
    base, extra = divmod(n_wires, k)
    return tuple(base + 1 if g < extra else base for g in range(k))


def kron_blocks(mats: torch.Tensor, widths: tuple[int, ...]) -> list[torch.Tensor]:
    """Kronecker products of consecutive per-wire matrices ``mats [n, a, b]`` over wire groups ``widths``."""
    blocks = []
    start = 0
    for w in widths:
        block = mats[start]
        for q in range(start + 1, start + w):
            block = torch.kron(block, mats[q])
        blocks.append(block)
        start += w
    return blocks


def apply_blocks(
    state: torch.Tensor, blocks: list[torch.Tensor], widths: tuple[int, ...], restore: bool = True
) -> torch.Tensor:
    """Apply ``kron(blocks)`` to every row of ``state [R, d_in^n]`` -> ``[R, d_out^n]`` (wire 0 most significant).

    ``blocks[g]`` is ``[d_out^w_g, d_in^w_g]`` for the ``g``-th group of ``w_g = widths[g]`` consecutive wires.
    Each block acts on the trailing wires as one GEMM, then the wire order is rotated by one transpose so the
    preceding group becomes trailing; after all groups the original order is back. With ``restore=False`` the
    last rotation is left out: the result is in the order (groups 1, 2, ..., k-1, group 0), see
    :func:`rotated_positions`, for a following gather to undo at no extra cost.
    """
    rows = state.shape[0]
    last = len(blocks) - 1
    for g in range(last, -1, -1):
        block = blocks[g]
        out = state.reshape(-1, block.shape[1]) @ block.transpose(0, 1)
        if g > 0 or (restore and last > 0):
            out = out.reshape(rows, -1, block.shape[0]).transpose(1, 2)
        state = out.reshape(rows, -1)
    return state


def rotated_positions(n_wires: int, local_dim: int, first_width: int) -> torch.Tensor:
    """``pos[j]``: where basis index ``j`` sits after :func:`apply_blocks` with ``restore=False``.

    That layout has the first ``first_width`` wires moved behind the others:
    ``pos[j] = (j mod d^(n-w)) * d^w + j div d^(n-w)``.
    """
    j = torch.arange(local_dim**n_wires, dtype=_index_dtype(local_dim**n_wires))
    rest = local_dim ** (n_wires - first_width)
    return (j % rest) * local_dim**first_width + j // rest


class _Permute(torch.autograd.Function):
    """``x[:, idx]`` for a permutation ``idx``; the backward is the inverse gather ``g[:, inv]`` (no scatter-add).

    Linear with real 0/1 coefficients, so the same rule holds for complex ``x``; the backward is itself a
    ``_Permute``, so higher derivatives work too.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, idx: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(idx, inv)
        return x.index_select(1, idx)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        idx, inv = ctx.saved_tensors
        return _Permute.apply(grad, inv, idx), None, None


def _inverse(idx: torch.Tensor) -> torch.Tensor:
    inv = torch.empty_like(idx)
    inv[idx] = torch.arange(idx.numel(), dtype=idx.dtype)
    return inv


# ----------------------------------------------------------------------------------------------------------
# the backend
# ----------------------------------------------------------------------------------------------------------

_MEASURE_PTM = ((0.5, 0.0, 0.0, 0.5), (0.5, 0.0, 0.0, -0.5))  # row k: Tr(|k><k| P_j) / 2 for j = I, X, Y, Z


class TorchBackend(Backend):
    """Exact batched simulation in torch (see the module docstring for the representations and the paths).

    Options:
        group_size: log2 of the largest Kronecker block applied as one GEMM (default 5): blocks of up to
            ``group_size`` wires of a statevector (32x32 by default), ``max(1, group_size // 2)`` wires of a
            Pauli-basis density matrix (16x16 by default); the wires are split into the fewest such groups, of
            balanced sizes. Results do not depend on it.
        method: ``"auto"`` (default), ``"schrodinger"`` or ``"heisenberg"`` (see the module docstring and
            :meth:`estimated_cost`). A forced ``"heisenberg"`` whose propagated matrix would have more than
            ``MAX_HEISENBERG_ENTRIES`` entries is refused; ``"auto"`` never picks it. Trajectories
            (``spec.is_stochastic``) always take the Schrödinger path; a forced ``"heisenberg"`` is refused.

    Raises:
        ValueError: a bad ``group_size`` or ``method`` (the message names the allowed values).
    """

    name: ClassVar[str] = "torch"
    supports_cuda: ClassVar[bool] = True
    supports_trajectories: ClassVar[bool] = True

    def __init__(self, spec: CircuitSpec, group_size: int = 5, method: str | Method = "auto") -> None:
        super().__init__(spec)
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"group_size={group_size!r} must be an integer >= 1")
        self.method = Method.parse(method, "method")
        self.group_size = group_size
        n = spec.n_qubits
        #: trajectories: noisy, simulated on statevectors (stochastic); else noisy means a density matrix
        self.trajectories = spec.is_stochastic
        if self.trajectories and self.method is Method.HEISENBERG:
            raise ValueError(
                "method='heisenberg' is not available with simulation='trajectories' (every trajectory has its own "
                "noise); allowed values here: 'auto', 'schrodinger'"
            )
        self.noisy = spec.is_noisy and not self.trajectories
        self.local_dim = 4 if self.noisy else 2
        self.widths = wire_groups(n, max(1, group_size // 2) if self.noisy else group_size)
        self.n_outputs = 2**n if spec.measurement is Measurement.PROBS else n
        #: rows of the Heisenberg matrix: the observables (noisy) or the basis states (noiseless)
        self.heisenberg_rows = self.n_outputs if self.noisy else 2**n
        entries = self.heisenberg_rows * self.local_dim**n
        if self.method is Method.HEISENBERG and entries > MAX_HEISENBERG_ENTRIES:
            raise ValueError(
                f"method='heisenberg' needs a {self.heisenberg_rows} x {self.local_dim**n} matrix for "
                f"n_qubits={n} (more than MAX_HEISENBERG_ENTRIES={MAX_HEISENBERG_ENTRIES}); allowed values here: "
                f"'auto', 'schrodinger'"
            )
        self._host: dict[str, torch.Tensor] = {}  # CPU constants (float64/complex128/integer), built on first use
        self._trajectory_tables = None  # trajectories' host tables (_trajectories.TrajectoryTables), on first use
        self._cache: dict[tuple[torch.device, torch.dtype], dict[str, torch.Tensor]] = {}

    # constants ----------------------------------------------------------------------------------------------

    def _constant_names(self, method: Method) -> list[str]:
        """The constants a path reads (each gather is an index map and its inverse, see :class:`_Permute`)."""
        spec, heisenberg = self.spec, method is Method.HEISENBERG
        cnot = bool(spec.cnot_pairs())
        groups = range(len(self.widths))
        if not self.noisy:
            names = ["zsign"] if (spec.measurement is Measurement.EXPVAL or self.trajectories) else []
            names += ["perm", "perm_inv", "perm_rot", "perm_rot_inv"] if cnot else []
            return names + (["heis_init"] if heisenberg else [])
        names = ["noise"] + ([f"noise{g}" for g in groups] if not spec.trainable else [])
        if heisenberg:
            return names + (["padj_rot", "padj_rot_inv", "psign_adj"] if cnot else []) + ["heis_init"]
        names += ["pidx_rot", "pidx_rot_inv", "psign", "porder"] if cnot else []
        if spec.measurement is Measurement.PROBS:
            return names + [f"final{g}" for g in groups]
        return names + ["zidx", "zrow"]

    def _consts(self, device: torch.device, dtype: torch.dtype, method: Method) -> dict[str, torch.Tensor]:
        """The constants of ``method`` on ``device`` in ``dtype`` (or its complex type), moved once and kept."""
        consts = self._cache.setdefault((device, dtype), {})
        for name in self._constant_names(method):
            if name not in consts:
                if name not in self._host:
                    self._host.update(self._build_constants(name))
                value = self._host[name]
                if value.is_complex():
                    value = value.to(device=device, dtype=_COMPLEX[dtype])
                elif value.is_floating_point() or value.dtype is torch.int8:  # int8: CNOT signs
                    value = value.to(device=device, dtype=dtype)
                else:
                    value = value.to(device=device)
                consts[name] = value
        return consts

    def _build_constants(self, name: str) -> dict[str, torch.Tensor]:
        """Build (on the CPU) the family of constants that ``name`` belongs to."""
        spec, n = self.spec, self.spec.n_qubits
        pairs = spec.cnot_pairs()
        if name == "zsign":
            bits = (torch.arange(2**n)[:, None] >> torch.arange(n - 1, -1, -1)[None, :]) & 1
            return {"zsign": (1 - 2 * bits).to(torch.float64)}  # [2^n, n]: eigenvalue of Z_q
        if name.startswith("perm"):
            perm = cnot_permutation(n, pairs).to(torch.int32)
            perm_rot = rotated_positions(n, 2, self.widths[0])[perm]
            return {"perm": perm, "perm_inv": _inverse(perm), "perm_rot": perm_rot, "perm_rot_inv": _inverse(perm_rot)}
        if name == "noise":
            noise = np.eye(4)
            for kind, p in spec.noise_channels():
                noise = channel_ptm(kind, p) @ noise
            return {"noise": torch.as_tensor(noise)}  # [4, 4]: the merged channels of one qubit
        if name == "heis_init":
            return {"heis_init": self._heisenberg_start()}
        noise = self._host["noise"]  # built first: it heads every noisy path's list
        if name.startswith("noise"):
            return {f"noise{g}": blk for g, blk in enumerate(kron_blocks(noise.expand(n, 4, 4), self.widths))}
        if name.startswith("final"):
            final = torch.tensor(_MEASURE_PTM, dtype=torch.float64) @ noise  # the last noise, then measure
            return {f"final{g}": blk for g, blk in enumerate(kron_blocks(final.expand(n, 2, 4), self.widths))}
        if name in ("zidx", "zrow"):
            # <Z_q> after the noise = sum_j noise[3, j] c[digit j on q, I elsewhere] (a PTM maps I to I)
            zidx = torch.arange(4)[None, :] * (4 ** torch.arange(n - 1, -1, -1))[:, None]  # [n, 4]
            return {"zidx": zidx, "zrow": noise[3].clone()}
        idx, sign = cnot_pauli_map(n, pairs)
        rotated = rotated_positions(n, 4, self.widths[0])
        if name in ("pidx_rot", "pidx_rot_inv", "psign", "porder"):
            # Schrodinger, reading the rotated order: (C c)[s] = sign[s] c[idx[s]]; porder: the wires in that order
            idx_rot = rotated[idx]
            w0 = self.widths[0]
            porder = torch.tensor(list(range(w0, n)) + list(range(w0)))
            return {"pidx_rot": idx_rot, "pidx_rot_inv": _inverse(idx_rot), "psign": sign, "porder": porder}
        if name in ("padj_rot", "padj_rot_inv", "psign_adj"):
            # Heisenberg, reading the rotated order: (O C)[k, s] = O[k, inv[s]] sign[inv[s]]
            inv = _inverse(idx)
            adj_rot = rotated[inv]
            return {"padj_rot": adj_rot, "padj_rot_inv": _inverse(adj_rot), "psign_adj": sign[inv]}
        raise KeyError(name)  # pragma: no cover - internal

    def _heisenberg_start(self) -> torch.Tensor:
        """The weight-independent end of the circuit, propagated once (a float64 / complex128 constant).

        Noisy: the measured observables pushed back through the last layer's noise and CNOTs, ``[K, 4^n]``, row
        ``k`` such that ``out[:, k] = c @ row`` for the Pauli coefficients ``c`` before that CNOT pattern.
        Noiseless: the basis states pushed through the first CNOT pattern, ``[2^n, 2^n]`` (row ``j`` from ``e_j``).
        """
        n, pairs = self.spec.n_qubits, self.spec.cnot_pairs()
        if not self.noisy:
            eye = torch.eye(2**n, dtype=torch.complex128)
            return eye[:, cnot_permutation(n, pairs)] if pairs else eye
        noise = self._host["noise"]
        if self.spec.measurement is Measurement.PROBS:
            final = torch.tensor(_MEASURE_PTM, dtype=torch.float64) @ noise
            obs = final
            for _ in range(n - 1):
                obs = torch.kron(obs, final)  # [2^n, 4^n]: row k = 2^-n Tr(|k><k| N(P_s)) over s
        else:
            obs = torch.zeros(n, 4**n, dtype=torch.float64)
            zidx = torch.arange(4)[None, :] * (4 ** torch.arange(n - 1, -1, -1))[:, None]
            obs.scatter_(1, zidx, noise[3].expand(n, 4).contiguous())  # row q: Z_q after the noise
        if pairs:
            idx, sign = cnot_pauli_map(n, pairs)
            inv = _inverse(idx)
            obs = obs[:, inv] * sign[inv]
        return obs

    # ------------------------------------------------------------------------------------------------------

    def estimated_cost(self, batch: int) -> dict[str, float]:
        """Estimated multiply-adds of one forward pass of each path for a batch of ``batch`` samples.

        With ``D = d^n`` basis entries (``d = 2`` noiseless, ``d = 4`` noisy), the per-row cost of one layer
        after the first ``layer = D * sum_g d^w_g + D`` (the Kronecker GEMMs over the wire groups ``w_g``, then the
        CNOT gather; ``D`` alone for an untrainable noiseless layer) and ``L`` layers (the first layer's
        rotations are absorbed into the encoding, the first CNOT pattern costs ``D``):

        * ``schrodinger = B * (D + D + (L - 1) * layer + final)``, ``final = D * sum_g d^w_g`` (noisy probs),
          ``4n`` (noisy expval) or ``D`` (noiseless);
        * ``heisenberg = rows * ((L - 1) * layer) + B * (D + D * K)``, where ``rows = K`` observables (noisy) or
          ``rows = K = 2^n`` (noiseless: the final ``psi_1 @ T``).

        ``auto`` takes the smaller (Schrödinger on a tie). Trajectories: the Schrödinger cost of a noiseless
        circuit for ``batch * (n_trajectories + 1)`` rows (an upper bound: rows whose first event is in a later
        layer skip the earlier ones); ``heisenberg`` is ``inf`` (not available).
        """
        if self.trajectories:
            d = 2**self.spec.n_qubits
            layer = d * sum(2**w for w in self.widths) + d
            rows = batch * (self.spec.n_trajectories + 1)
            return {
                Method.SCHRODINGER.value: float(rows * (2 * d + (self.spec.depth - 1) * layer + d)),
                Method.HEISENBERG.value: float("inf"),
            }
        n, depth, d = self.spec.n_qubits, self.spec.depth, self.local_dim
        dim = d**n
        gemm = dim * sum(d**w for w in self.widths)
        layer = (gemm if (self.noisy or self.spec.trainable) else 0) + dim
        if self.noisy:
            final = gemm if self.spec.measurement is Measurement.PROBS else 4 * n
        else:
            final = dim
        rows = self.heisenberg_rows
        schrodinger = batch * (2 * dim + (depth - 1) * layer + final)
        heisenberg = rows * (depth - 1) * layer + batch * (dim + dim * rows)
        return {Method.SCHRODINGER.value: float(schrodinger), Method.HEISENBERG.value: float(heisenberg)}

    def choose_method(self, batch: int) -> Method:
        """The path :meth:`run` takes for a batch of ``batch`` samples: the forced one, or the cheaper one."""
        if self.method is not Method.AUTO:
            return self.method
        if self.trajectories:
            return Method.SCHRODINGER
        if self.heisenberg_rows * self.local_dim**self.spec.n_qubits > MAX_HEISENBERG_ENTRIES:
            return Method.SCHRODINGER
        cost = self.estimated_cost(batch)
        return Method.HEISENBERG if cost["heisenberg"] < cost["schrodinger"] else Method.SCHRODINGER

    # ------------------------------------------------------------------------------------------------------

    def run(
        self, angles: torch.Tensor, weights: torch.Tensor | None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """See :meth:`Backend.run`. ``generator``: a seeded CPU ``torch.Generator``, required (and only used) for
        trajectories (``spec.is_stochastic``); each call advances it."""
        if angles.dtype not in _COMPLEX:
            raise TypeError(f"angles must be float32 or float64, got {angles.dtype}")
        if self.trajectories and not isinstance(generator, torch.Generator):
            raise ValueError(
                f"generator={generator!r}: simulation='trajectories' needs a seeded CPU torch.Generator "
                "(QuantumLayer passes its own, seeded by seed=)"
            )
        b, n = angles.shape[0], self.spec.n_qubits
        method = self.choose_method(b)
        consts = self._consts(angles.device, angles.dtype, method)
        if weights is not None:
            weights = weights.to(angles.dtype)
        x = angles.reshape(b, n, 3)
        if self.trajectories:
            return self._run_trajectories(x, weights, consts, generator)  # type: ignore[arg-type]
        if self.noisy:
            return self._run_noisy(x, weights, consts, method)
        return self._run_noiseless(x, weights, consts, method)

    # noisy, stochastic: trajectories ----------------------------------------------------------------------

    def _run_trajectories(
        self, x: torch.Tensor, weights: torch.Tensor | None, c: dict[str, torch.Tensor], generator: torch.Generator
    ) -> torch.Tensor:
        from . import _trajectories  # imports this module's building blocks (a cycle at import time)

        if self._trajectory_tables is None:
            self._trajectory_tables = _trajectories.TrajectoryTables.build(self.spec)
        tables = self._trajectory_tables
        if "traj_corr" not in c:
            c.update(_trajectories.trajectory_constants(tables, self.spec.n_qubits, x.device, x.dtype))
        return _trajectories.simulate(self.spec, self.widths, tables, c, x, weights, generator)

    # noiseless: statevector -------------------------------------------------------------------------------

    def _run_noiseless(
        self, x: torch.Tensor, weights: torch.Tensor | None, c: dict[str, torch.Tensor], method: Method
    ) -> torch.Tensor:
        vecs = encoded_amplitudes(x)  # [B, n, 2]
        layer_u = euler_unitaries(weights) if weights is not None else None  # [depth, n, 2, 2]
        if layer_u is not None:
            vecs = (layer_u[0] @ vecs.unsqueeze(-1)).squeeze(-1)
        psi = _product_state(vecs)  # [B, 2^n]
        first = "perm" if "perm" in c else None
        if method is Method.HEISENBERG:
            # row j of the table: the basis state e_j through layers 1..depth-1 (the first CNOTs are in heis_init)
            table, pending = self._unitary_layers(c["heis_init"], layer_u, c, None)
            if pending is not None:
                table = _Permute.apply(table, c[pending], c[pending + "_inv"])
            psi, pending = psi @ table, None
        else:
            psi, pending = self._unitary_layers(psi, layer_u, c, first)
        probs = psi.real**2 + psi.imag**2
        # the last CNOT gather commutes with |.|^2: done on the real probabilities, or folded into the Z signs
        if self.spec.measurement is Measurement.EXPVAL:
            zsign = c["zsign"] if pending is None else c["zsign"].index_select(0, c[pending + "_inv"])
            return probs @ zsign
        if pending is not None:
            probs = _Permute.apply(probs, c[pending], c[pending + "_inv"])
        return probs

    def _unitary_layers(
        self, psi: torch.Tensor, layer_u: torch.Tensor | None, c: dict[str, torch.Tensor], pending: str | None
    ) -> tuple[torch.Tensor, str | None]:
        """Layers ``1..depth-1`` (rotations, then CNOTs) on statevector rows ``psi [R, 2^n]``.

        ``pending`` names a CNOT gather still owed to ``psi``. Each layer's own gather is deferred the same way
        (so the caller can fold the last one into the measurement): returns ``(psi, pending)``, with ``pending``
        ``"perm"`` (standard order), ``"perm_rot"`` (``psi`` in :func:`apply_blocks`' rotated order) or None.
        """
        cnot = "perm" in c
        for layer in range(1, self.spec.depth):
            if pending is not None:
                psi = _Permute.apply(psi, c[pending], c[pending + "_inv"])
            if layer_u is not None:
                psi = apply_blocks(psi, kron_blocks(layer_u[layer], self.widths), self.widths, restore=not cnot)
                pending = "perm_rot" if cnot else None
            else:
                pending = "perm" if cnot else None
        return psi, pending

    # noisy: Pauli-basis density matrix --------------------------------------------------------------------

    def _run_noisy(
        self, x: torch.Tensor, weights: torch.Tensor | None, c: dict[str, torch.Tensor], method: Method
    ) -> torch.Tensor:
        b, n, depth = x.shape[0], self.spec.n_qubits, self.spec.depth
        bloch = encoded_bloch_vectors(x)  # [B, n, 3]
        rots = bloch_rotations(weights) if weights is not None else None  # [depth, n, 3, 3]
        if rots is not None:
            bloch = (rots[0] @ bloch.unsqueeze(-1)).squeeze(-1)
        local = torch.nn.functional.pad(bloch, (1, 0), value=1.0)  # [B, n, 4]: (1, r) = Tr(P rho_q)
        blocks = self._layer_blocks(rots, c)  # per later layer: Kronecker blocks of (noise, then rotations)
        if method is Method.HEISENBERG:
            obs = c["heis_init"]  # [K, 4^n]
            cnot = "padj_rot" in c
            for layer in range(depth - 1, 0, -1):
                adjoint = [blk.transpose(0, 1) for blk in blocks[layer - 1]]
                obs = apply_blocks(obs, adjoint, self.widths, restore=not cnot)
                if cnot:  # O -> O C, reading the rotated order
                    obs = _Permute.apply(obs, c["padj_rot"], c["padj_rot_inv"]) * c["psign_adj"]
            return _product_state(local) @ obs.transpose(0, 1)
        cnot = "pidx_rot" in c
        if cnot:  # build the product directly in the rotated order that the CNOT gather reads
            coeffs = _product_state(local.index_select(1, c["porder"]))
            coeffs = _Permute.apply(coeffs, c["pidx_rot"], c["pidx_rot_inv"]) * c["psign"]
        else:
            coeffs = _product_state(local)  # [B, 4^n]: c_s = Tr(P_s rho)
        for layer in range(1, depth):
            coeffs = apply_blocks(coeffs, blocks[layer - 1], self.widths, restore=not cnot)
            if cnot:
                coeffs = _Permute.apply(coeffs, c["pidx_rot"], c["pidx_rot_inv"]) * c["psign"]
        if self.spec.measurement is Measurement.PROBS:
            return apply_blocks(coeffs, [c[f"final{g}"] for g in range(len(self.widths))], self.widths)
        return (coeffs[:, c["zidx"].reshape(-1)].reshape(b, n, 4) * c["zrow"]).sum(-1)

    def _layer_blocks(self, rots: torch.Tensor | None, c: dict[str, torch.Tensor]) -> list[list[torch.Tensor]]:
        """For layers ``1..depth-1``: Kronecker blocks of the per-qubit PTM ``diag(1, R_l) @ noise``."""
        depth = self.spec.depth
        if depth == 1:
            return []
        if rots is None:
            const = [c[f"noise{g}"] for g in range(len(self.widths))]
            return [const] * (depth - 1)
        noise = c["noise"]
        n = self.spec.n_qubits
        # row 0 of a trace-preserving PTM is (1, 0, 0, 0); rows 1..3 are rotated by R_l
        merged = torch.cat([noise[:1].expand(depth - 1, n, 1, 4), rots[1:] @ noise[1:]], dim=-2)
        return [kron_blocks(merged[layer], self.widths) for layer in range(depth - 1)]


def _product_state(vecs: torch.Tensor) -> torch.Tensor:
    """Kronecker product over wires of ``vecs [B, n, d]`` -> ``[B, d^n]`` (wire 0 most significant).

    Built as a balanced tree (product of the two halves' products), so only the last outer product is full size
    and its backward reduces over a full half rather than over one wire.
    """
    b, n = vecs.shape[0], vecs.shape[1]
    if n == 1:
        return vecs[:, 0]
    left = _product_state(vecs[:, : n // 2])
    right = _product_state(vecs[:, n // 2 :])
    return (left.unsqueeze(2) * right.unsqueeze(1)).reshape(b, -1)
