"""Choosing among finished trials: Pareto front, knee point, weighted score, constraints, champion selection.

Plain functions over *trial records*: a sequence of mappings, one per trial, holding at least the objective
values (extra keys such as a trial id are ignored). ``directions`` maps each objective to ``"max"`` or ``"min"``
and fixes the objective order; every function raises ``ValueError`` on bad input before computing anything.

Normalisation (used by :func:`knee_point` and :func:`weighted_score`): each objective is min-max scaled over the
points considered, oriented so that **1 is the best value and 0 the worst**::

    g_k(p) = (p_k - min_k) / (max_k - min_k)   for "max"
    g_k(p) = (max_k - p_k) / (max_k - min_k)   for "min"

An objective on which all considered points agree carries no information; its ``g`` is 1 for every point.
Ties are broken by the lower index, so every result is deterministic.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "Direction",
    "Rule",
    "NoFeasiblePointError",
    "pareto_front",
    "knee_point",
    "weighted_score",
    "apply_constraints",
    "select",
]

Point = Mapping[str, Any]


class Direction(str, enum.Enum):
    """Optimisation direction of an objective (Ray Tune's ``mode``)."""

    MAX = "max"
    MIN = "min"

    def __str__(self) -> str:
        return str(self.value)


class Rule(str, enum.Enum):
    """Champion-selection rule of :func:`select`."""

    KNEE = "knee"
    WEIGHTED = "weighted"
    CONSTRAINED_BEST = "constrained_best"

    def __str__(self) -> str:
        return str(self.value)


class NoFeasiblePointError(ValueError):
    """No trial satisfies the constraints (the message lists them and the best value seen for each)."""


# ----------------------------------------------------------------------------------------------------------
# input checks


def _directions(directions: Mapping[str, Direction | str]) -> dict[str, Direction]:
    if not isinstance(directions, Mapping) or not directions:
        raise ValueError(f"directions must be a non-empty mapping objective -> 'max'|'min'; got {directions!r}")
    out: dict[str, Direction] = {}
    for key, value in directions.items():
        try:
            out[str(key)] = Direction(str(value).lower())
        except ValueError:
            raise ValueError(
                f"directions[{key!r}]={value!r} is not a direction; allowed values: 'max', 'min'"
            ) from None
    return out


def _matrix(points: Sequence[Point], objectives: Sequence[str]) -> list[list[float]]:
    """Objective values as rows of floats, checked: non-empty, every key present, finite numbers."""
    if isinstance(points, (str, bytes, Mapping)) or not isinstance(points, Sequence):
        raise ValueError(f"points must be a sequence of mappings (one per trial); got {type(points).__name__}")
    if len(points) == 0:
        raise ValueError("points is empty; need at least one trial record")
    rows = []
    for i, point in enumerate(points):
        if not isinstance(point, Mapping):
            raise ValueError(f"points[{i}] must be a mapping of objective values; got {point!r}")
        row = []
        for key in objectives:
            if key not in point:
                raise ValueError(f"points[{i}] has no value for objective {key!r}; it has keys {sorted(point)}")
            value = point[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"points[{i}][{key!r}]={value!r} must be a finite number")
            row.append(float(value))
        rows.append(row)
    return rows


def _oriented(rows: list[list[float]], dirs: Sequence[Direction]) -> list[list[float]]:
    """Rows with "min" objectives negated, so that larger is better everywhere."""
    signs = [1.0 if d is Direction.MAX else -1.0 for d in dirs]
    return [[s * v for s, v in zip(signs, row, strict=True)] for row in rows]


def _front(oriented: list[list[float]], candidates: Sequence[int]) -> list[int]:
    """Indices (subset of ``candidates``) not dominated by another candidate (larger is better)."""
    front = []
    for i in candidates:
        a = oriented[i]
        dominated = False
        for j in candidates:
            b = oriented[j]
            if (
                j != i
                and all(y >= x for x, y in zip(a, b, strict=True))
                and any(y > x for x, y in zip(a, b, strict=True))
            ):
                dominated = True
                break
        if not dominated:
            front.append(i)
    return front


def _normalised(oriented: list[list[float]], candidates: Sequence[int]) -> dict[int, list[float]]:
    """Min-max normalisation over ``candidates``, 1 = best (see the module docstring)."""
    n_obj = len(oriented[candidates[0]])
    lo = [min(oriented[i][k] for i in candidates) for k in range(n_obj)]
    hi = [max(oriented[i][k] for i in candidates) for k in range(n_obj)]
    return {
        i: [1.0 if hi[k] == lo[k] else (oriented[i][k] - lo[k]) / (hi[k] - lo[k]) for k in range(n_obj)]
        for i in candidates
    }


# ----------------------------------------------------------------------------------------------------------
# public functions


def pareto_front(points: Sequence[Point], directions: Mapping[str, Direction | str]) -> list[int]:
    """Indices of the non-dominated points, ascending.

    Point ``a`` is dominated when some other point is at least as good on every objective and strictly better
    on one. Duplicates do not dominate each other: identical non-dominated points are all on the front.

    Args:
        points: trial records (mappings holding every objective in ``directions``).
        directions: ``{objective: "max"|"min"}``.
    Returns:
        Sorted indices into ``points``; never empty.
    """
    dirs = _directions(directions)
    rows = _matrix(points, list(dirs))
    return _front(_oriented(rows, list(dirs.values())), range(len(rows)))


def knee_point(points: Sequence[Point], directions: Mapping[str, Direction | str]) -> int:
    """Index of the knee of the Pareto front.

    Rule: take the Pareto front; min-max normalise each objective over the front (1 = best, module docstring);
    the knee is the front point with the smallest Euclidean distance to the ideal point ``(1, ..., 1)``, i.e.
    the best compromise. Ties go to the lower index. One point is its own knee.
    """
    dirs = _directions(directions)
    rows = _matrix(points, list(dirs))
    return _knee(_oriented(rows, list(dirs.values())), range(len(rows)))


def _knee(oriented: list[list[float]], candidates: Sequence[int]) -> int:
    front = _front(oriented, candidates)
    norm = _normalised(oriented, front)
    return min(front, key=lambda i: (math.fsum((1.0 - g) ** 2 for g in norm[i]), i))


def weighted_score(
    points: Sequence[Point], weights: Mapping[str, float], directions: Mapping[str, Direction | str]
) -> list[float]:
    """Weighted sum of min-max-normalised objectives, one score per point in [0, 1] (1 = best on all).

    ``score(p) = Σ_k w_k g_k(p) / Σ_k w_k`` with ``g`` normalised over all ``points`` (module docstring).

    Args:
        weights: one non-negative weight per objective, same keys as ``directions``, not all zero.
    """
    dirs = _directions(directions)
    w = _weights(weights, dirs)
    rows = _matrix(points, list(dirs))
    return _weighted(_oriented(rows, list(dirs.values())), range(len(rows)), w)


def _weights(weights: Mapping[str, float], dirs: Mapping[str, Direction]) -> list[float]:
    if not isinstance(weights, Mapping) or set(map(str, weights)) != set(dirs):
        got = sorted(map(str, weights)) if isinstance(weights, Mapping) else weights
        raise ValueError(f"weights must have exactly the objectives {list(dirs)} as keys; got {got!r}")
    out = []
    for key in dirs:
        value = weights[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"weights[{key!r}]={value!r} must be a finite number >= 0")
        out.append(float(value))
    if sum(out) <= 0:
        raise ValueError(f"weights={dict(weights)!r} are all zero; at least one must be > 0")
    return out


def _weighted(oriented: list[list[float]], candidates: Sequence[int], w: list[float]) -> list[float]:
    norm = _normalised(oriented, candidates)
    total = math.fsum(w)
    return [math.fsum(wk * g for wk, g in zip(w, norm[i], strict=True)) / total for i in candidates]


def apply_constraints(points: Sequence[Point], constraints: Mapping[str, float]) -> list[int]:
    """Indices of the points that satisfy every constraint, ascending (all indices when there are none).

    Args:
        constraints: ``{"min_<metric>": bound}`` (the metric must be >= bound) and/or ``{"max_<metric>": bound}``
            (<= bound), e.g. ``{"min_accuracy": 0.9, "max_asr": 0.5}`` — ``Constraints.as_dict()`` of a space.
    """
    parsed = _constraints(constraints)
    rows = _matrix(points, [metric for _, metric, _ in parsed])
    return [
        i
        for i, row in enumerate(rows)
        if all((v >= bound) if kind == "min" else (v <= bound) for (kind, _, bound), v in zip(parsed, row, strict=True))
    ]


def _constraints(constraints: Mapping[str, float]) -> list[tuple[str, str, float]]:
    if not isinstance(constraints, Mapping):
        raise ValueError(f"constraints must be a mapping like {{'min_accuracy': 0.9}}; got {constraints!r}")
    parsed = []
    for key, bound in constraints.items():
        kind, _, metric = str(key).partition("_")
        if kind not in ("min", "max") or not metric:
            raise ValueError(f"constraint {key!r} must be named min_<metric> or max_<metric>, e.g. 'min_accuracy'")
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
            raise ValueError(f"constraint {key}={bound!r} must be a finite number")
        parsed.append((kind, metric, float(bound)))
    return parsed


def select(
    points: Sequence[Point],
    rule: Rule | str,
    directions: Mapping[str, Direction | str],
    *,
    weights: Mapping[str, float] | None = None,
    constraints: Mapping[str, float] | None = None,
    primary: str | None = None,
) -> int:
    """Index of the champion among ``points``; constraints (if any) are applied first.

    Rules:
        * ``knee``: :func:`knee_point` among the feasible points.
        * ``weighted``: the feasible point with the highest :func:`weighted_score` (normalised over the feasible
          points); needs ``weights``.
        * ``constrained_best``: the feasible point best on ``primary`` (default: the first objective), ties broken
          by the remaining objectives in order, then by index.

    Raises:
        ValueError: unknown rule, ``weights`` missing for ``weighted``/given for another rule, unknown
            ``primary``, or any bad input of the functions above.
        NoFeasiblePointError: no point satisfies the constraints.
    """
    try:
        rule = Rule(str(rule).lower())
    except ValueError:
        raise ValueError(
            f"rule={rule!r} is not supported; allowed values: {', '.join(repr(r.value) for r in Rule)}"
        ) from None
    dirs = _directions(directions)
    order = list(dirs)
    w: list[float] = []
    if rule is Rule.WEIGHTED:
        if weights is None:
            raise ValueError(f"rule='weighted' needs weights for the objectives {order}")
        w = _weights(weights, dirs)
    elif weights is not None:
        raise ValueError(f"weights are only used by rule='weighted'; got rule={rule.value!r}")
    if primary is not None and primary not in dirs:
        raise ValueError(f"primary={primary!r} is not an objective; allowed values: {', '.join(map(repr, order))}")
    rows = _matrix(points, order)
    feasible = apply_constraints(points, constraints or {})
    if not feasible:
        raise NoFeasiblePointError(_infeasible_message(points, constraints or {}))
    oriented = _oriented(rows, list(dirs.values()))
    if rule is Rule.KNEE:
        return _knee(oriented, feasible)
    if rule is Rule.WEIGHTED:
        scores = _weighted(oriented, feasible, w)
        return max(zip(feasible, scores, strict=True), key=lambda t: (t[1], -t[0]))[0]
    first = order.index(primary) if primary is not None else 0
    keys = [first] + [k for k in range(len(order)) if k != first]
    return max(feasible, key=lambda i: (tuple(oriented[i][k] for k in keys), -i))


def _infeasible_message(points: Sequence[Point], constraints: Mapping[str, float]) -> str:
    parts = []
    for kind, metric, bound in _constraints(constraints):
        values = [float(p[metric]) for p in points]
        best = max(values) if kind == "min" else min(values)
        parts.append(f"{kind}_{metric}={bound:g} (best seen {best:g})")
    return f"no trial satisfies the constraints: {', '.join(parts)}; relax them or run more trials"
