"""Choosing among finished trials: Pareto front, knee point, weighted score, constraints, champion selection.

Plain functions over *trial records*: a sequence of mappings, one per trial, holding at least the objective
values (extra keys such as a trial id are ignored). ``directions`` maps each objective to ``"max"`` or ``"min"``
and fixes the objective order; every function raises ``ValueError`` on bad input before computing anything.

Normalisation (used by :func:`knee_point` and :func:`weighted_score`): each objective is min-max scaled over the
points considered, oriented so that **1 is the best value and 0 the worst**::

    g_k(p) = (p_k - min_k) / (max_k - min_k)   for "max"
    g_k(p) = (max_k - p_k) / (max_k - min_k)   for "min"

An objective on which all considered points agree carries no information; its ``g`` is 1 for every point.
Ties are broken by the next objectives in order, then by the points' ids (trial ids, when given; else their
index), so every result is deterministic.

Uncertainty: a point may carry ``<objective>_ci_low`` / ``<objective>_ci_high`` (its 95% interval). The knee
ignores an objective whose spread over the front does not exceed the largest half-width of its intervals there
(the differences are noise), and ``robust_floor`` reports the intervals in its reason.

Trust: :func:`choose` takes each point's *flag* (None for a trial whose robustness numbers can be trusted, else why
not: an ``EvaluationReport.flag`` such as ``MASKING: ...``). A flagged trial is never chosen while any trial is
unflagged, whatever its numbers: gradient masking inflates robust accuracy, so the rules would otherwise favour
exactly the trials whose numbers are least true.

:func:`choose` returns the champion's index together with one sentence saying why it won; :func:`select` returns
the index alone.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

__all__ = [
    "Direction",
    "Rule",
    "NoFeasiblePointError",
    "NoTrustworthyPointError",
    "pareto_front",
    "knee_point",
    "weighted_score",
    "apply_constraints",
    "select",
    "choose",
    "Choice",
    "selection_metrics",
    "DEFAULT_ACCURACY_FLOOR",
]

#: ``robust_floor``: trials whose clean accuracy is at most this far below the best trial's are eligible.
DEFAULT_ACCURACY_FLOOR = 0.02

Point = Mapping[str, Any]


class Direction(str, enum.Enum):
    """Optimisation direction of an objective (Ray Tune's ``mode``)."""

    MAX = "max"
    MIN = "min"

    def __str__(self) -> str:
        return str(self.value)


class Rule(str, enum.Enum):
    """Champion-selection rule of :func:`select` / :func:`choose` (``robust_floor`` is the default of sweeps)."""

    ROBUST_FLOOR = "robust_floor"
    KNEE = "knee"
    WEIGHTED = "weighted"
    CONSTRAINED_BEST = "constrained_best"

    def __str__(self) -> str:
        return str(self.value)


class NoFeasiblePointError(ValueError):
    """No trial satisfies the constraints (the message lists them and the best value seen for each)."""


class NoTrustworthyPointError(ValueError):
    """Every trial is flagged (masking, near chance, an attack without the adaptive treatment the model needs,
    diagnostics not run, no attack reaching its ε): none of their robustness numbers can be trusted, so none is
    chosen (the message lists each trial's flag)."""


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

    Rule: take the Pareto front; drop the objectives whose spread over the front does not exceed their
    uncertainty (module docstring; without intervals every objective is kept); min-max normalise the rest over
    the front (1 = best); the knee is the front point with the smallest Euclidean distance to the ideal point
    ``(1, ..., 1)``, i.e. the best compromise. When no objective is left, the front point best on the objectives
    in order. Ties go to the better point on the objectives in order, then to the lower index. One point is its
    own knee.
    """
    dirs = _directions(directions)
    rows = _matrix(points, list(dirs))
    return _knee(_oriented(rows, list(dirs.values())), range(len(rows)), _uncertainty(points, list(dirs)),
                 list(range(len(rows))))[0]


def _uncertainty(points: Sequence[Point], objectives: Sequence[str]) -> list[list[float]]:
    """Per point and objective, half the width of its ``_ci_low``/``_ci_high`` interval (0 without one)."""
    out = []
    for p in points:
        row = []
        for k in objectives:
            lo, hi = p.get(f"{k}_ci_low"), p.get(f"{k}_ci_high")
            ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (lo, hi))
            row.append(abs(float(hi) - float(lo)) / 2 if ok else 0.0)
        out.append(row)
    return out


def _knee(
    oriented: list[list[float]], candidates: Sequence[int], half_width: list[list[float]], ids: Sequence[Any]
) -> tuple[int, list[int]]:
    """(knee index, objectives used)."""
    front = _front(oriented, candidates)
    n_obj = len(oriented[front[0]])
    used = [
        k for k in range(n_obj)
        if max(oriented[i][k] for i in front) - min(oriented[i][k] for i in front)
        > max(half_width[i][k] for i in front)
    ]
    norm = _normalised([[row[k] for k in used] for row in oriented], front) if used else {i: [] for i in front}
    return min(
        front,
        key=lambda i: (math.fsum((1.0 - g) ** 2 for g in norm[i]), tuple(-v for v in oriented[i]), ids[i]),
    ), used


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
    """Indices of the points that satisfy every constraint, ascending (all indices when there are none). A point
    without a finite value for a constrained metric (e.g. ``asr`` when no test image was classified correctly, so
    none was attacked; NaN or absent) does not satisfy that constraint; a metric that no point has is an error.

    Args:
        constraints: ``{"min_<metric>": bound}`` (the metric must be >= bound) and/or ``{"max_<metric>": bound}``
            (<= bound), e.g. ``{"min_accuracy": 0.9, "max_asr": 0.5}`` — ``Constraints.as_dict()`` of a space.
    """
    parsed = _constraints(constraints)
    _matrix(points, [])  # checks the sequence and its mappings
    for kind, metric, _ in parsed:
        if not any(metric in point for point in points):  # a misspelt metric, not a trial without a value
            raise ValueError(f"constraint {kind}_{metric}: no point has a value for {metric!r}; points[0] has keys "
                             f"{sorted(points[0])}")
    return [i for i, point in enumerate(points) if all(_satisfies(point, c) for c in parsed)]


def _value(point: Point, key: str) -> float | None:
    """``point[key]`` as a float, None when absent or not a finite number."""
    value = point.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _satisfies(point: Point, constraint: tuple[str, str, float]) -> bool:
    kind, metric, bound = constraint
    value = _value(point, metric)
    return value is not None and (value >= bound if kind == "min" else value <= bound)


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


class Choice(NamedTuple):
    """A champion and why: ``index`` into the points, ``reason`` one sentence for people."""

    index: int
    reason: str


def select(
    points: Sequence[Point],
    rule: Rule | str,
    directions: Mapping[str, Direction | str],
    *,
    weights: Mapping[str, float] | None = None,
    constraints: Mapping[str, float] | None = None,
    primary: str | None = None,
    ids: Sequence[Any] | None = None,
    accuracy_floor: float = DEFAULT_ACCURACY_FLOOR,
    flags: Sequence[str | None] | None = None,
    allow_flagged: bool = False,
) -> int:
    """Index of the champion among ``points`` (:func:`choose` without the reason)."""
    return choose(points, rule, directions, weights=weights, constraints=constraints, primary=primary, ids=ids,
                  accuracy_floor=accuracy_floor, flags=flags, allow_flagged=allow_flagged).index


def selection_metrics(directions: Mapping[str, Any], constraints: Mapping[str, float] | None = None) -> list[str]:
    """The metrics a trial record needs for :func:`choose`: the objectives, ``accuracy`` and ``robust_accuracy``
    (``robust_floor`` and the reasons read them, objectives or not) and every constrained metric, without repeats.
    Each may come with its ``_ci_low`` / ``_ci_high`` interval."""
    names = [*map(str, directions), "accuracy", "robust_accuracy", *(m for _, m, _ in _constraints(constraints or {}))]
    return list(dict.fromkeys(names))


def _fmt(p: Point, key: str) -> str:
    value = float(p[key])
    lo, hi = p.get(f"{key}_ci_low"), p.get(f"{key}_ci_high")
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and math.isfinite(lo) and math.isfinite(hi):
        return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"
    return f"{value:.4g}"


def choose(
    points: Sequence[Point],
    rule: Rule | str,
    directions: Mapping[str, Direction | str],
    *,
    weights: Mapping[str, float] | None = None,
    constraints: Mapping[str, float] | None = None,
    primary: str | None = None,
    ids: Sequence[Any] | None = None,
    accuracy_floor: float = DEFAULT_ACCURACY_FLOOR,
    flags: Sequence[str | None] | None = None,
    allow_flagged: bool = False,
) -> Choice:
    """The champion among ``points`` and one sentence saying why; flagged points are set aside and constraints
    (if any) applied first.

    ``flags``: one per point, None (or empty) when the point's robustness numbers can be trusted, else why not
    (its ``EvaluationReport.flag``). Flagged points are never chosen while any point is unflagged, and the reason
    names the ones set aside. When every point is flagged, :class:`NoTrustworthyPointError`, unless
    ``allow_flagged`` (then the rule chooses among them all and the reason says the champion's numbers are not
    trustworthy). None: every point is trusted.

    Rules:
        * ``robust_floor`` (what a careful person picks): among the feasible points whose ``accuracy`` is at most
          ``accuracy_floor`` below the best feasible accuracy, the one with the highest ``robust_accuracy``
          (worst case over the attack suite); ties broken by the objectives in order. Needs both metrics in
          every point (objectives or not).
        * ``knee``: :func:`knee_point` among the feasible points (objectives within their uncertainty ignored).
        * ``weighted``: the feasible point with the highest :func:`weighted_score` (normalised over the feasible
          points); needs ``weights``.
        * ``constrained_best``: the feasible point best on ``primary`` (default: the first objective), ties broken
          by the remaining objectives in order.

    Remaining ties (points equal on every objective) go to the smaller id (``ids``: e.g. trial ids; default the
    index).

    Raises:
        ValueError: unknown rule, ``weights`` missing for ``weighted``/given for another rule, unknown
            ``primary``, ``robust_floor`` without ``accuracy``/``robust_accuracy`` values, a bad
            ``accuracy_floor``, or any bad input of the functions above.
        NoTrustworthyPointError: every point is flagged (and not ``allow_flagged``).
        NoFeasiblePointError: no unflagged point satisfies the constraints.
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
    if isinstance(accuracy_floor, bool) or not isinstance(accuracy_floor, (int, float)) or not (
        0.0 <= accuracy_floor <= 1.0
    ):
        raise ValueError(f"accuracy_floor={accuracy_floor!r} is invalid; allowed values: a number in [0, 1]")
    rows = _matrix(points, order)
    if ids is None:
        ids = list(range(len(rows)))
    elif len(ids) != len(rows):
        raise ValueError(f"ids has {len(ids)} entries for {len(rows)} points; give one id per point")
    trusted = _trusted(flags, ids, len(rows), allow_flagged)
    feasible = [i for i in apply_constraints(points, constraints or {}) if i in trusted]
    if not feasible:
        raise NoFeasiblePointError(_infeasible_message([points[i] for i in trusted], constraints or {}))
    oriented = _oriented(rows, list(dirs.values()))
    kept = [name for name, on in (("unflagged", len(trusted) < len(rows)), ("feasible", bool(constraints))) if on]
    n_feasible = f"{len(rows)} trials" + (f" ({len(feasible)} {' and '.join(kept)})" if kept else "")

    def done(best: int, reason: str) -> Choice:
        return Choice(best, reason + _trust_note(best, flags, ids, trusted))

    def tie_key(i: int) -> tuple[Any, ...]:
        return (tuple(-v for v in oriented[i]), ids[i])

    if rule is Rule.ROBUST_FLOOR:
        need = [m for m in ("accuracy", "robust_accuracy") if m not in dirs]
        if need:
            _matrix(points, need)  # checks presence and finiteness
        acc = {i: float(points[i]["accuracy"]) for i in feasible}
        best_acc = max(acc.values())
        eligible = [i for i in feasible if acc[i] >= best_acc - accuracy_floor - 1e-12]
        by_robust = sorted(eligible, key=lambda i: (-float(points[i]["robust_accuracy"]), tie_key(i)))
        best = by_robust[0]
        p = points[best]
        reason = (
            f"highest worst-case robust accuracy {_fmt(p, 'robust_accuracy')} among the {len(eligible)} of "
            f"{n_feasible} whose clean accuracy is within {accuracy_floor:.2f} of the best of them ({best_acc:.3f}); "
            f"clean accuracy {_fmt(p, 'accuracy')}"
        )
        tied = [i for i in by_robust[1:] if float(points[i]["robust_accuracy"]) == float(p["robust_accuracy"])]
        if tied:
            # the first objective on which it beats the next of the tied trials (else the id decided)
            decided = next((order[k] for k in range(len(order)) if oriented[best][k] != oriented[tied[0]][k]), None)
            reason += (f"; tied on robust accuracy with {', '.join(str(ids[i]) for i in tied)}, won on "
                       + (decided if decided is not None else f"trial id (equal on {', '.join(order)})"))
        return done(best, reason)
    if rule is Rule.KNEE:
        best, used = _knee(oriented, feasible, _uncertainty(points, order), ids)
        if used:
            names = ", ".join(order[k] for k in used)
            dropped = [order[k] for k in range(len(order)) if k not in used]
            reason = f"knee of the Pareto front of {n_feasible} (best compromise of {names})"
            if dropped:
                reason += f"; {', '.join(dropped)} ignored: its spread on the front is within its 95% interval"
        else:
            reason = (f"no objective separates the Pareto front of {n_feasible} beyond its 95% interval; best on "
                      f"{', '.join(order)} in order")
        return done(best, reason + "; " + ", ".join(f"{k} {_fmt(points[best], k)}" for k in order))
    if rule is Rule.WEIGHTED:
        scores = _weighted(oriented, feasible, w)
        score_of = dict(zip(feasible, scores, strict=True))
        best = min(feasible, key=lambda i: (-score_of[i], tie_key(i)))
        score = score_of[best]
        return done(best, f"highest weighted score {score:.3f} ({', '.join(f'{k}×{x:g}' for k, x in zip(order, w))})"
                          f" among {n_feasible}")
    first = order.index(primary) if primary is not None else 0
    keys = [first] + [k for k in range(len(order)) if k != first]
    best = min(feasible, key=lambda i: (tuple(-oriented[i][k] for k in keys), ids[i]))
    return done(best, f"best {order[first]} {_fmt(points[best], order[first])} among {n_feasible}, ties broken "
                      f"by {', '.join(order[k] for k in keys[1:]) or 'id'}")


def _trusted(flags: Sequence[str | None] | None, ids: Sequence[Any], n: int, allow_flagged: bool) -> list[int]:
    """Indices of the unflagged points (all of them when ``flags`` is None, or when every point is flagged and
    ``allow_flagged``); :class:`NoTrustworthyPointError` when every point is flagged otherwise."""
    if flags is None:
        return list(range(n))
    if isinstance(flags, (str, bytes)) or not isinstance(flags, Sequence) or len(flags) != n:
        raise ValueError(f"flags must be a sequence with one entry per point ({n}); got {flags!r}")
    trusted = [i for i in range(n) if not flags[i]]
    if trusted or allow_flagged:
        return trusted or list(range(n))
    listed = "; ".join(f"{ids[i]}: {flags[i]}" for i in range(n))
    raise NoTrustworthyPointError(
        f"no trial's robustness numbers can be trusted, so none is chosen ({listed}); fix what the flags name "
        "(see docs/attacks.md: masking diagnostics, near chance, adaptive attacks) and run more trials, or choose "
        "among the flagged trials anyway with allow_flagged (`qshield select --allow-flagged`)"
    )


def _flag_label(flag: str) -> str:
    """The short form of a flag: each ``; ``-separated part up to its first ``:`` or `` (``."""
    return " + ".join(part.split(":")[0].split(" (")[0].strip() for part in str(flag).split("; "))


def _trust_note(best: int, flags: Sequence[str | None] | None, ids: Sequence[Any], trusted: list[int]) -> str:
    """What the reason adds about flagged trials: the ones set aside, or that the champion itself is flagged."""
    if flags is None:
        return ""
    if flags[best]:
        return (f"; FLAGGED: every trial is flagged and it was chosen among them anyway, so its robustness numbers "
                f"are not trustworthy ({flags[best]})")
    aside = [i for i in range(len(flags)) if i not in trusted]
    if not aside:
        return ""
    return "; flagged, so not considered: " + ", ".join(f"{ids[i]} ({_flag_label(flags[i])})" for i in aside)


def _infeasible_message(points: Sequence[Point], constraints: Mapping[str, float]) -> str:
    parts = []
    for kind, metric, bound in _constraints(constraints):
        values = [v for p in points if (v := _value(p, metric)) is not None]
        best = (max(values) if kind == "min" else min(values)) if values else None
        parts.append(f"{kind}_{metric}={bound:g} (" + (f"best seen {best:g}" if best is not None else
                                                       "no trial has a value") + ")")
    return f"no trial satisfies the constraints: {', '.join(parts)}; relax them or run more trials"
