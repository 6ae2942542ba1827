"""An independent, deliberately naive NumPy simulator of the circuit spec, used only by the tests.

Full 2^n x 2^n matrices built with Kronecker products and Kraus sums: slow but obviously right, and shares no
code with any backend (only the spec's gate list, written out again here from docs/circuits.md).
"""

from __future__ import annotations

import numpy as np

I2 = np.eye(2, dtype=complex)
X = np.array([[0, 1], [1, 0]], dtype=complex)
Y = np.array([[0, -1j], [1j, 0]], dtype=complex)
Z = np.array([[1, 0], [0, -1]], dtype=complex)


def rot(axis: str, t: float) -> np.ndarray:
    p = {"x": X, "y": Y, "z": Z}[axis]
    return np.cos(t / 2) * I2 - 1j * np.sin(t / 2) * p


def on_wire(m: np.ndarray, wire: int, n: int) -> np.ndarray:
    out = np.array([[1.0 + 0j]])
    for w in range(n):
        out = np.kron(out, m if w == wire else I2)
    return out


def cnot(c: int, t: int, n: int) -> np.ndarray:
    p0 = np.array([[1, 0], [0, 0]], dtype=complex)
    p1 = np.array([[0, 0], [0, 1]], dtype=complex)
    a = np.array([[1.0 + 0j]])
    b = np.array([[1.0 + 0j]])
    for w in range(n):
        a = np.kron(a, p0 if w == c else I2)
        b = np.kron(b, p1 if w == c else (X if w == t else I2))
    return a + b


def pairs(n: int, ent: str) -> list[tuple[int, int]]:
    if ent == "none":
        return []
    if ent == "linear":
        return [(i, i + 1) for i in range(n - 1)]
    if ent == "ring":
        return [(i, i + 1) for i in range(n - 1)] + [(n - 1, 0)]
    if ent == "full":
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    if ent == "star":
        return [(0, j) for j in range(1, n)]
    if ent == "brick":
        return [(i, i + 1) for i in range(0, n - 1, 2)] + [(i, i + 1) for i in range(1, n - 1, 2)]
    raise ValueError(ent)


def kraus(kind: str, p: float) -> list[np.ndarray]:
    if kind == "depolarizing":
        return [np.sqrt(1 - p) * I2, np.sqrt(p / 3) * X, np.sqrt(p / 3) * Y, np.sqrt(p / 3) * Z]
    if kind == "amplitude_damping":
        return [np.array([[1, 0], [0, np.sqrt(1 - p)]], dtype=complex), np.array([[0, np.sqrt(p)], [0, 0]], dtype=complex)]
    if kind == "phase_damping":
        return [np.array([[1, 0], [0, np.sqrt(1 - p)]], dtype=complex), np.array([[0, 0], [0, np.sqrt(p)]], dtype=complex)]
    raise ValueError(kind)


def channels(noise: str, p: float) -> list[tuple[str, float]]:
    if noise == "none" or p == 0:
        return []
    if noise == "mixed":
        return [("depolarizing", 0.4 * p), ("amplitude_damping", 0.3 * p), ("phase_damping", 0.3 * p)]
    return [(noise, p)]


def simulate(x, w, *, n, depth, ent, noise, p, readout, measurement, trainable=True) -> np.ndarray:
    """Simulate one sample: x [3n], w [depth, n, 3] -> probs [2^n] or <Z> [n]."""
    dim = 2**n
    rho = np.zeros((dim, dim), dtype=complex)
    rho[0, 0] = 1
    def apply(u):
        nonlocal rho
        rho = u @ rho @ u.conj().T
    for q in range(n):
        for k, axis in enumerate("xyz"):
            apply(on_wire(rot(axis, x[3 * q + k]), q, n))
    for layer in range(depth):
        if trainable:
            for q in range(n):
                for k, axis in enumerate("xyz"):
                    apply(on_wire(rot(axis, w[layer, q, k]), q, n))
        for c, t in pairs(n, ent):
            apply(cnot(c, t, n))
        for kind, pk in channels(noise, p):
            for q in range(n):
                rho = sum(on_wire(k, q, n) @ rho @ on_wire(k, q, n).conj().T for k in kraus(kind, pk))
    probs = np.real(np.diag(rho))
    if readout:
        flip = np.array([[1 - readout, readout], [readout, 1 - readout]])
        m = np.array([[1.0]])
        for _ in range(n):
            m = np.kron(m, flip)
        probs = m @ probs
    if measurement == "probs":
        return probs
    bits = (np.arange(dim)[:, None] >> np.arange(n - 1, -1, -1)[None, :]) & 1
    return probs @ (1 - 2 * bits)
