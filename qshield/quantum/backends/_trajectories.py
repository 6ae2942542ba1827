"""Quantum trajectories: an unbiased Monte-Carlo simulation of the noisy circuit on statevectors (torch backend).

Method: the quantum-jump / Monte-Carlo wavefunction unravelling of the spec's channels (Dalibard, Castin &
Mølmer, PRL 68, 580 (1992); Plenio & Knight, Rev. Mod. Phys. 70, 101 (1998)), with three additions that make it
an unbiased estimator of every output *and of its gradient*, cheap at low noise, and batched:

**Unravellings.** Every single-qubit channel is written as ``Phi(rho) = sum_k K_k rho K_k^dagger`` with a
branch ``k = 0`` that is "no event":

* depolarizing(p): ``K_k = sqrt(q_k) P_k``, ``P = I, X, Y, Z``, ``q = (1 - p, p/3, p/3, p/3)``;
* phase damping(g) as the equal channel ``K_k = sqrt(q_k) Z^k``, ``q = ((1 + s)/2, (1 - s)/2)``,
  ``s = sqrt(1 - g)`` (it scales the coherences by ``s`` and keeps the populations, as PennyLane's Kraus pair);
* amplitude damping(g): PennyLane's Kraus pair ``K_0 = diag(1, sqrt(1 - g))``, ``K_1 = sqrt(g) |0><1|``, whose
  Born probabilities ``||K_k psi||^2`` depend on the state.

A trajectory picks one branch per channel application ("site"; per layer, per qubit, per channel) with a
*proposal* probability ``q_k`` and applies ``K_k`` **unnormalised**; it carries the weight ``1 / q_k`` of every
amplitude-damping branch (for the mixed-unitary channels ``K_k / sqrt(q_k)`` is the unitary and the weight is 1).
The proposal of amplitude damping is the Born rule of the qubit's marginal at the start of its layer,
``q_1 = g * P(qubit = 1)`` (flipped when a depolarizing X or Y on that qubit came first), treated as a
constant (it is computed from values without gradient): close to the true jump probability, so the weights stay
near 1 (bounded variance even for strong damping), and not a function the gradient has to pass through.

**Unbiasedness (values and gradients).** Let ``g_pi(theta) = f(K_pi ... psi_0)`` be the output ``f`` (a
quadratic form: a probability or ``<Z_q>``) of the unnormalised path ``pi`` (one branch per site); the exact
output is ``F(theta) = sum_pi g_pi(theta)`` (the Kraus expansion of the channels). A path is drawn with
probability ``Q_theta(pi)`` (the product of its proposals) and scored ``g_pi(theta) / Q_theta(pi)``, so
``E[score] = sum_pi Q(pi) g_pi / Q(pi) = F``. Its gradient is taken with the proposals held fixed:
``E[grad g_pi / Q(pi)] = sum_pi grad g_pi = grad F`` at every ``theta`` -- no score-function term is needed
because ``Q`` only enters as the sampling measure and its reciprocal, which cancel path by path (requires
``Q(pi) > 0`` wherever ``g_pi != 0``: a damping jump of a qubit whose marginal is exactly ``|0>`` has
``K_1 psi = 0``, and then ``g_pi`` and its gradient vanish). With state-independent proposals (unitary
mixtures) the score is a smooth function of ``theta`` for a fixed draw and its gradient is the exact derivative;
with amplitude damping it is an unbiased estimate of the derivative of the mean, not the derivative of the
sample (the proposals move with ``theta`` but are held fixed), which is what stochastic training and EOT need.

**Stratification on the no-event path.** The path ``pi_0`` with no event anywhere has probability
``w_0 = Q(pi_0)``; at realistic noise it is most of the mass (``w_0 ~ 0.9`` for 12 qubits, depth 2, mixed noise
``p = 0.005``). It is computed once per sample, exactly, and the ``T = n_trajectories`` sampled trajectories
are drawn *conditioned on at least one event*: the first event site ``F`` has
``P(F = s) = (1 - q0_s) prod_{r < s} q0_r / (1 - w_0)``, the sites before it take branch 0, the event branch
at ``F`` is drawn among ``k != 0`` in proportion to ``q_k``, and the sites after ``F`` are drawn freely. The
estimate ``out = g_{pi_0} + (1 - w_0) / T * sum_t g_{pi_t} / Q(pi_t)`` is unbiased by the same argument (the two
strata are disjoint and cover all paths) and its variance is ``(1 - w_0)^2 Var / T``, i.e. at low noise far
fewer trajectories reach a given standard error. The no-event path is simulated first (it fixes the amplitude
damping proposals ``q0``); a trajectory whose first event is in layer ``l`` starts from the no-event state of
layer ``l`` (the shared prefix is not recomputed).

**Batched.** All trajectories of all samples are rows of one ``[R, 2^n]`` complex tensor: the layers' rotations
(with the no-event operator ``D = prod_c K_{c,0}``, diagonal, merged in) are one Kronecker GEMM per wire group
shared by every row, the CNOTs one gather (see ``_torch.py``); an event is a per-row 2x2 correction
``D^-1 K_event`` applied only to the rows and qubits that have one. The randomness is drawn from the caller's
CPU ``torch.Generator`` in a fixed order and shape (``[B, T]``, ``[B, T]``, ``[B, T, sites]`` uniforms):
the same seed gives the same outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .._spec import CircuitSpec, Measurement, kraus_operators
from ._torch import (
    _COMPLEX,
    _PAULIS,
    _Permute,
    _product_state,
    apply_blocks,
    encoded_amplitudes,
    euler_unitaries,
    kron_blocks,
)


# ----------------------------------------------------------------------------------------------------------
# unravellings
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unravelling:
    """A single-qubit channel as trajectory branches: ``Phi(rho) = sum_k q_k B_k rho B_k^dagger``.

    Attributes:
        kind: the channel (``depolarizing``, ``amplitude_damping``, ``phase_damping``).
        ops: ``[K, 2, 2]`` complex128 branch operators applied to a trajectory, branch 0 = no event.
        probs: state-independent branch probabilities ``q_k`` (``ops`` unitary, weight 1), or None for amplitude
            damping: ``ops`` are its Kraus operators, drawn with the Born proposal ``q_1 = gamma * P(1)``, weight
            ``1 / q_k``.
        gamma: the damping probability (amplitude damping), else 0.
    """

    kind: str
    ops: np.ndarray
    probs: tuple[float, ...] | None
    gamma: float = 0.0

    @property
    def state_dependent(self) -> bool:
        return self.probs is None

    @property
    def flips(self) -> tuple[bool, ...]:
        """Per branch: whether it swaps the qubit's ``|0>``/``|1>`` populations (the unitaries X, Y), for the
        proposal of a damping channel that follows on the same qubit."""
        if self.state_dependent:
            return (False,) * len(self.ops)
        return tuple(bool(abs(op[0, 0]) < 1e-12 and abs(op[1, 1]) < 1e-12) for op in self.ops)


def unravel(kind: str, p: float) -> Unravelling:
    """The trajectory branches of the spec's channel ``kind`` with probability ``p`` (see the module docstring)."""
    if kind == "depolarizing":
        return Unravelling(kind, _PAULIS.copy(), (1.0 - p, p / 3, p / 3, p / 3))
    if kind == "phase_damping":
        s = math.sqrt(1.0 - p)
        return Unravelling(kind, _PAULIS[[0, 3]].copy(), ((1.0 + s) / 2, (1.0 - s) / 2))
    if kind == "amplitude_damping":
        return Unravelling(kind, np.array(kraus_operators(kind, p), dtype=np.complex128), None, float(p))
    kraus_operators(kind, p)  # raises the spec's ValueError listing the channels
    raise AssertionError(kind)  # pragma: no cover


@dataclass(frozen=True)
class TrajectoryTables:
    """Host-side (float64 / complex128) constants of one spec's trajectories, built once per backend.

    Attributes:
        channels: the unravellings applied per qubit per layer, in the spec's order.
        radix: branch ``k_c`` of channel ``c`` contributes ``k_c * radix[c]`` to a site's combined branch index.
        shared: ``[2, 2]`` the no-event operator ``D`` of one qubit (product of the branch-0 operators), merged
            into the shared per-layer GEMM; the identity when that product is singular (damping ``gamma = 1``).
        corrections: ``[combos, 2, 2]`` per combined branch the per-row operator ``D^-1 prod_c B_{c, k_c}``.
        dense: ``D`` was singular: every row and qubit gets its correction (combination 0 included).
        log_q0: per channel the log no-event probability if state-independent, else None.
    """

    channels: tuple[Unravelling, ...]
    radix: tuple[int, ...]
    shared: np.ndarray
    corrections: np.ndarray
    dense: bool
    log_q0: tuple[float | None, ...]

    @classmethod
    def build(cls, spec: CircuitSpec) -> "TrajectoryTables":
        channels = tuple(unravel(kind, p) for kind, p in spec.noise_channels())
        sizes = [len(ch.ops) for ch in channels]
        radix = tuple(int(np.prod(sizes[:c])) for c in range(len(channels)))
        shared = np.eye(2, dtype=np.complex128)
        for ch in channels:
            shared = ch.ops[0] @ shared
        if np.count_nonzero(shared - np.diag(np.diag(shared))):  # pragma: no cover - branch 0 is always diagonal
            raise AssertionError("the no-event operator must be diagonal")
        dense = bool(np.min(np.abs(np.diag(shared))) < 1e-12)
        if dense:
            shared = np.eye(2, dtype=np.complex128)
        inverse = np.diag(1.0 / np.diag(shared))
        corrections = np.empty((int(np.prod(sizes)), 2, 2), dtype=np.complex128)
        for combo in range(corrections.shape[0]):
            op = np.eye(2, dtype=np.complex128)
            for c, ch in enumerate(channels):
                op = ch.ops[(combo // radix[c]) % sizes[c]] @ op
            corrections[combo] = inverse @ op
        log_q0 = tuple(None if ch.probs is None else _log(ch.probs[0]) for ch in channels)
        return cls(channels, radix, shared, corrections, dense, log_q0)

    @property
    def shared_is_identity(self) -> bool:
        return bool(np.array_equal(self.shared, np.eye(2)))

    def w0_unital(self, spec: CircuitSpec) -> float:
        """Product of the state-independent no-event probabilities over all sites of ``spec``."""
        sites = spec.depth * spec.n_qubits
        return math.exp(sum(sites * q for q in self.log_q0 if q is not None))

    @property
    def damping(self) -> int | None:
        """Index of the amplitude-damping channel (the only state-dependent one), or None."""
        return next((c for c, ch in enumerate(self.channels) if ch.state_dependent), None)


def _log(q: float) -> float:
    return math.log(q) if q > 0 else -math.inf


# ----------------------------------------------------------------------------------------------------------
# the simulation
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Ctx:
    """Per-call constants and the shared per-layer operators."""

    n: int
    depth: int
    widths: tuple[int, ...]
    tables: TrajectoryTables
    consts: dict[str, torch.Tensor]  # perm / perm_rot (+ inverses), zsign, traj_* (on the device, in the dtype)
    advance: list[list[torch.Tensor] | None]  # per layer l >= 1: Kronecker blocks of (rotations_l @ D), or None
    cnot: bool
    expval: bool

    @property
    def n_channels(self) -> int:
        return len(self.tables.channels)


def trajectory_constants(
    tables: TrajectoryTables, n_qubits: int, device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """The trajectory tables on ``device``: ``traj_shared [2, 2]``, ``traj_corr [combos, 2, 2]`` (complex) and,
    unless ``D`` is the identity, ``traj_final [2^n]`` (real: the last layer's no-event operator ``D`` on every
    qubit, acting on the probabilities as ``prod_q |D_{b_q b_q}|^2``)."""
    cdtype = _COMPLEX[dtype]
    shared = torch.as_tensor(tables.shared)
    out = {
        "traj_shared": shared.to(device=device, dtype=cdtype),
        "traj_corr": torch.as_tensor(tables.corrections).to(device=device, dtype=cdtype),
    }
    if not tables.shared_is_identity:
        diag = torch.diagonal(shared).abs() ** 2
        final = diag
        for _ in range(n_qubits - 1):
            final = torch.kron(final, diag)
        out["traj_final"] = final.to(device=device, dtype=dtype)
    return out


def simulate(
    spec: CircuitSpec,
    widths: tuple[int, ...],
    tables: TrajectoryTables,
    consts: dict[str, torch.Tensor],
    x: torch.Tensor,
    weights: torch.Tensor | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """Trajectory estimate of the circuit's outputs (before readout) for angles ``x [B, n, 3]``.

    Returns ``[B, 2^n]`` probabilities or ``[B, n]`` ``<Z_q>``, differentiable w.r.t. ``x`` and ``weights``;
    unbiased for the exact outputs and their gradients (module docstring). Consumes ``2 B T + B T S`` float64
    uniforms from ``generator`` (``T = spec.n_trajectories``, ``S = depth * n * channels`` sites).
    """
    if generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")
    ctx = _context(spec, widths, tables, consts, weights)
    psi = _first_layer(ctx, x, weights)
    saved, p1, f0 = _no_event_path(ctx, psi)
    plan = _sample_events(ctx, x.shape[0], spec.n_trajectories, p1, generator, x.device)
    out = f0 * tables.w0_unital(spec)
    if plan.sample.numel():
        f_ev, logw = _event_paths(ctx, plan, saved, p1)
        coef = (plan.coef * torch.exp(logw)).to(f_ev.dtype)
        out = out.index_add(0, plan.sample, coef[:, None] * f_ev)
    return out


def _context(
    spec: CircuitSpec,
    widths: tuple[int, ...],
    tables: TrajectoryTables,
    consts: dict[str, torch.Tensor],
    weights: torch.Tensor | None,
) -> _Ctx:
    n, depth = spec.n_qubits, spec.depth
    shared = consts["traj_shared"]
    identity = tables.shared_is_identity
    advance: list[list[torch.Tensor] | None] = [None]
    if depth > 1:
        layer_u = euler_unitaries(weights[1:]) if weights is not None else None  # [depth - 1, n, 2, 2]
        for layer in range(1, depth):
            if layer_u is None:
                advance.append(None if identity else kron_blocks(shared.expand(n, 2, 2), widths))
            else:
                advance.append(kron_blocks(layer_u[layer - 1] @ shared, widths))
    return _Ctx(n, depth, widths, tables, consts, advance, bool(spec.cnot_pairs()),
                spec.measurement is Measurement.EXPVAL)


def _first_layer(ctx: _Ctx, x: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Encoding, the first layer's rotations and CNOTs: ``[B, 2^n]`` (standard wire order)."""
    vecs = encoded_amplitudes(x)  # [B, n, 2]
    if weights is not None:
        vecs = (euler_unitaries(weights[0]) @ vecs.unsqueeze(-1)).squeeze(-1)
    psi = _product_state(vecs)
    if ctx.cnot:
        psi = _Permute.apply(psi, ctx.consts["perm"], ctx.consts["perm_inv"])
    return psi


def _advance(ctx: _Ctx, psi: torch.Tensor, layer: int) -> torch.Tensor:
    """The shared no-event operator of layer ``layer - 1`` and the rotations and CNOTs of layer ``layer``."""
    blocks = ctx.advance[layer]
    c = ctx.consts
    if blocks is None:
        return _Permute.apply(psi, c["perm"], c["perm_inv"]) if ctx.cnot else psi
    psi = apply_blocks(psi, blocks, ctx.widths, restore=not ctx.cnot)
    return _Permute.apply(psi, c["perm_rot"], c["perm_rot_inv"]) if ctx.cnot else psi


def _measure(ctx: _Ctx, psi: torch.Tensor) -> torch.Tensor:
    """The last layer's shared no-event operator (diagonal: on the probabilities), then the measurement."""
    probs = torch.view_as_real(psi).square().sum(-1)  # |psi|^2; its backward needs no zero-filled complex buffer
    if "traj_final" in ctx.consts:
        probs = probs * ctx.consts["traj_final"]
    return probs @ ctx.consts["zsign"] if ctx.expval else probs


def _marginals(ctx: _Ctx, psi: torch.Tensor) -> torch.Tensor:
    """``P(qubit q = 1)`` of each (unnormalised) row, ``[R, n]`` float64 (0 for a zero row).

    Only a proposal for the damping branches (module docstring): computed from values, outside the graph.
    """
    pops = psi.real.detach() ** 2 + psi.imag.detach() ** 2
    total = pops.sum(1, keepdim=True).clamp_min(torch.finfo(pops.dtype).tiny)
    z = pops @ ctx.consts["zsign"]  # sum_x pops[x] (1 - 2 bit_q(x))
    return ((total - z) / (2 * total)).double().clamp(0.0, 1.0)


def _no_event_path(
    ctx: _Ctx, psi: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor]:
    """The path with no event anywhere, one row per sample: (states before each layer's noise, marginals
    ``P(1) [B, depth, n]`` there or None without damping, outputs ``[B, K]`` without the state-independent
    no-event factor)."""
    saved, p1 = [], []
    for layer in range(ctx.depth):
        saved.append(psi)
        if ctx.tables.damping is not None:
            p1.append(_marginals(ctx, psi))
        if ctx.tables.dense:
            combo = torch.zeros(psi.shape[0], ctx.n, dtype=torch.long, device=psi.device)
            psi = _correct_dense(ctx, psi, combo)
        if layer + 1 < ctx.depth:
            psi = _advance(ctx, psi, layer + 1)
    return saved, (torch.stack(p1, 1) if p1 else None), _measure(ctx, psi)


@dataclass(frozen=True)
class _Plan:
    """The sampled trajectories, rows ordered by the layer of their first event (all tensors on the device but
    ``birth``)."""

    sample: torch.Tensor  # [R] sample of each row
    first: torch.Tensor  # [R] first event site F
    first_kind: torch.Tensor  # [R] event branch at F
    birth: torch.Tensor  # [R] (CPU) layer of F
    uniforms: torch.Tensor  # [R, S] float64 draws for the sites after F
    logw: torch.Tensor  # [R] float64 damping log weight of the layers before the row's birth layer
    coef: torch.Tensor  # [R] float64 (1 - w0) / T of the row's sample


def _site_log_q0(ctx: _Ctx, p1: torch.Tensor | None, batch: int) -> torch.Tensor:
    """``log q0`` of the no-event branch at every site for every sample: ``[B, S]`` float64 (CPU), site order
    ``(layer, qubit, channel)``. Damping: ``log(1 - gamma P(1))`` with the no-event path's marginals."""
    cols = []
    for c, ch in enumerate(ctx.tables.channels):
        if ch.state_dependent:
            cols.append(torch.log1p(-ch.gamma * p1.cpu()))  # type: ignore[union-attr]
        else:
            cols.append(torch.full((batch, ctx.depth, ctx.n), ctx.tables.log_q0[c], dtype=torch.float64))
    return torch.stack(cols, -1).reshape(batch, -1)


def _sample_events(
    ctx: _Ctx, batch: int, t: int, p1: torch.Tensor | None, generator: torch.Generator, device: torch.device
) -> _Plan:
    """Draw ``t`` trajectories per sample conditioned on at least one event (module docstring).

    ``p1``: the no-event path's marginals ``[B, depth, n]`` (None without amplitude damping). Draws, in this
    order, ``v [B, t]`` (first event site), ``kind [B, t]`` (its branch), ``uniforms [B, t, S]`` (later sites).
    """
    tables, nc = ctx.tables, ctx.n_channels
    n_sites = ctx.depth * ctx.n * nc
    v = torch.rand(batch, t, dtype=torch.float64, generator=generator)
    kind_u = torch.rand(batch, t, dtype=torch.float64, generator=generator)
    uniforms = torch.rand(batch, t, n_sites, dtype=torch.float64, generator=generator)
    log_q0 = _site_log_q0(ctx, p1, batch)  # [B, S]
    cum = torch.cumsum(log_q0, 1)
    mass = -torch.expm1(cum[:, -1])  # 1 - w0 per sample
    cdf = -torch.expm1(cum)  # P(F <= s), nondecreasing, ends at mass
    first = torch.searchsorted(cdf, v * mass[:, None], right=True).clamp_max(n_sites - 1)  # [B, t]
    first_kind = torch.ones_like(first)
    for c, ch in enumerate(tables.channels):
        if ch.probs is not None and len(ch.probs) > 2 and sum(ch.probs[1:]) > 0:
            rel = torch.tensor(ch.probs[1:], dtype=torch.float64)
            kind = 1 + torch.searchsorted(torch.cumsum(rel / rel.sum(), 0), kind_u, right=True).clamp_max(len(rel) - 1)
            first_kind = torch.where(first % nc == c, kind, first_kind)
    # damping log weight of the layers before the first event's layer (the shared no-event prefix)
    prefix = torch.zeros(batch, ctx.depth, dtype=torch.float64)
    if tables.damping is not None:
        layer_sum = log_q0.reshape(batch, ctx.depth, ctx.n, nc)[:, :, :, tables.damping].sum(2)  # [B, depth]
        prefix[:, 1:] = -torch.cumsum(layer_sum, 1)[:, :-1]
    birth = first // (ctx.n * nc)
    keep = (mass > 0)[:, None].expand(batch, t).reshape(-1).nonzero().squeeze(1)  # w0 = 1: nothing to sample
    order = keep[torch.sort(birth.reshape(-1)[keep], stable=True).indices]
    sample = torch.arange(batch)[:, None].expand(batch, t).reshape(-1)[order]
    birth_r = birth.reshape(-1)[order]
    return _Plan(
        sample=sample.to(device),
        first=first.reshape(-1)[order].to(device),
        first_kind=first_kind.reshape(-1)[order].to(device),
        birth=birth_r,
        uniforms=uniforms.reshape(batch * t, n_sites)[order].to(device),
        logw=prefix[sample, birth_r].to(device),
        coef=(mass / t)[sample].to(device),
    )


def _event_paths(
    ctx: _Ctx, plan: _Plan, saved: list[torch.Tensor], p1_noevent: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Propagate the sampled trajectories: (unweighted outputs ``[R, K]``, damping log weights ``[R]``).

    A row whose first event is in layer ``l`` joins at layer ``l`` as a copy of its sample's no-event state.
    """
    psi: torch.Tensor | None = None
    logw = plan.logw.clone()
    counts = torch.bincount(plan.birth, minlength=ctx.depth).tolist()
    stop = 0
    for layer in range(ctx.depth):
        old, stop = stop, stop + counts[layer]
        if stop == 0:
            continue  # no trajectory has its first event yet
        born = plan.sample[old:stop]
        fresh = saved[layer].index_select(0, born)
        psi = fresh if psi is None else torch.cat([psi, fresh])
        p1 = None
        if p1_noevent is not None:  # damping proposals: own marginals, the no-event ones for the rows born here
            p1 = torch.cat([_marginals(ctx, psi[:old]), p1_noevent[:, layer].to(born.device)[born]])
        combo, dlogw = _decide(ctx, layer, plan.first[:stop], plan.first_kind[:stop], plan.uniforms[:stop], p1)
        logw[:stop] += dlogw
        psi = _correct(ctx, psi, combo)
        if layer + 1 < ctx.depth:
            psi = _advance(ctx, psi, layer + 1)
    return _measure(ctx, psi), logw  # type: ignore[arg-type]


def _decide(
    ctx: _Ctx,
    layer: int,
    first: torch.Tensor,
    first_kind: torch.Tensor,
    uniforms: torch.Tensor,
    p1: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Branches of layer ``layer``'s sites for the live rows: (combined branch ``[R, n]``, damping log weight
    ``[R]``). Sites before a row's first event take branch 0, the first event its drawn branch, later sites
    are drawn from the uniforms."""
    n, nc = ctx.n, ctx.n_channels
    device = uniforms.device
    rows = uniforms.shape[0]
    combo = torch.zeros(rows, n, dtype=torch.long, device=device)
    logw = torch.zeros(rows, dtype=torch.float64, device=device)
    flipped = torch.zeros(rows, n, dtype=torch.bool, device=device)
    base = (layer * n + torch.arange(n, device=device)) * nc  # [n] site index of channel 0 on each qubit
    for c, ch in enumerate(ctx.tables.channels):
        site = base + c
        u = uniforms[:, site]  # [R, n]
        if ch.state_dependent:
            p = torch.where(flipped, 1.0 - p1, p1)  # type: ignore[arg-type]
            q1 = ch.gamma * p
            k = (u < q1).long()
        else:
            probs = ch.probs or ()
            cum = torch.cumsum(torch.tensor(probs, dtype=torch.float64, device=device), 0)
            k = torch.searchsorted(cum, u.contiguous(), right=True).clamp_max(len(probs) - 1)
        before = site[None, :] < first[:, None]
        at = site[None, :] == first[:, None]
        k = torch.where(before, torch.zeros_like(k), torch.where(at, first_kind[:, None].expand_as(k), k))
        if ch.state_dependent:
            q = torch.where(k == 1, q1, 1.0 - q1)
            logw = logw - torch.log(q).sum(1)
        flips = torch.tensor(ch.flips, device=device)
        flipped = flipped ^ flips[k]
        combo = combo + k * ctx.tables.radix[c]
    return combo, logw


def _correct(ctx: _Ctx, psi: torch.Tensor, combo: torch.Tensor) -> torch.Tensor:
    """Apply the per-row event corrections ``D^-1 K_event`` of one layer (``combo [R, n]``, 0 = no event)."""
    if ctx.tables.dense:
        return _correct_dense(ctx, psi, combo)
    rows, qubits = (combo != 0).nonzero(as_tuple=True)
    if rows.numel() == 0:
        return psi
    mats = ctx.consts["traj_corr"][combo[rows, qubits]]
    return _RowQubitOps.apply(psi, rows, qubits, mats, ctx.n)


class _RowQubitOps(torch.autograd.Function):
    """``psi[rows[e]] <- mats[e]`` acting on qubit ``qubits[e]``, for every ``e``, out of place (``psi [R, 2^n]``).

    The operations on different qubits commute, so the order is immaterial. Linear in ``psi`` with constant
    ``mats``: the backward is the same operation with the adjoint matrices (so higher derivatives work), and it
    touches only the listed rows (no full-size zero fill and scatter as with ``index_select``/``index_copy``).
    """

    @staticmethod
    def forward(ctx, psi, rows, qubits, mats, n):  # type: ignore[override]
        ctx.save_for_backward(rows, qubits, mats)
        ctx.n = n
        out = psi.clone()
        for q in qubits.unique().tolist():
            sel = (qubits == q).nonzero().squeeze(1)
            r = rows[sel]  # distinct rows (one event per row, qubit and layer)
            sub = out.index_select(0, r).reshape(len(r), 2**q, 2, 2 ** (n - 1 - q))
            out.index_copy_(0, r, torch.einsum("eab,exby->exay", mats[sel], sub).reshape(len(r), -1))
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        rows, qubits, mats = ctx.saved_tensors
        return _RowQubitOps.apply(grad, rows, qubits, mats.conj().transpose(-1, -2), ctx.n), None, None, None, None


def _correct_dense(ctx: _Ctx, psi: torch.Tensor, combo: torch.Tensor) -> torch.Tensor:
    """Every row's correction on every qubit (only when the no-event operator is singular)."""
    n = ctx.n
    mats = ctx.consts["traj_corr"][combo]  # [R, n, 2, 2]
    for q in range(n):
        view = psi.reshape(psi.shape[0], 2**q, 2, 2 ** (n - 1 - q))
        psi = torch.einsum("rab,rxby->rxay", mats[:, q], view).reshape(psi.shape[0], -1)
    return psi
