"""Champion selection over trial records: hand-worked examples, an independent brute-force check, bad input."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from orchestrator.scoring import (
    Direction,
    NoFeasiblePointError,
    NoTrustworthyPointError,
    Rule,
    apply_constraints,
    choose,
    knee_point,
    pareto_front,
    select,
    selection_metrics,
    weighted_score,
)

# ---------------------------------------------------------------------------------------------------------
# 2-D example: accuracy (max), asr (min). Extra keys (trial_id) must be ignored.
#
#   idx  accuracy  asr    remark
#   0    0.90      0.50   best accuracy, worst asr on the front
#   1    0.80      0.20
#   2    0.70      0.10   best asr
#   3    0.75      0.40   dominated by 1 (0.80 >= 0.75 and 0.20 <= 0.40, both strict)
#   4    0.80      0.20   duplicate of 1: duplicates do not dominate each other -> both on the front
#   5    0.60      0.10   dominated by 2 (ties on asr, strictly worse accuracy)
#
# Pareto front = [0, 1, 2, 4].
TWO_D = [
    {"trial_id": "a", "accuracy": 0.90, "asr": 0.50},
    {"trial_id": "b", "accuracy": 0.80, "asr": 0.20},
    {"trial_id": "c", "accuracy": 0.70, "asr": 0.10},
    {"trial_id": "d", "accuracy": 0.75, "asr": 0.40},
    {"trial_id": "e", "accuracy": 0.80, "asr": 0.20},
    {"trial_id": "f", "accuracy": 0.60, "asr": 0.10},
]
DIRS_2D = {"accuracy": "max", "asr": "min"}

# 3-D example: accuracy (max), asr (min), adversary_cost (max).
#
#   idx  accuracy  asr   cost   remark
#   0    0.90      0.60   10
#   1    0.80      0.30   40
#   2    0.60      0.20  100
#   3    0.80      0.30   30    dominated by 1 (equal accuracy and asr, lower cost)
#   4    0.85      0.50   20    not dominated: better accuracy than 1, better asr than 0
#   5    0.50      0.70    5    dominated by 0 (worse on all three)
#
# Pareto front = [0, 1, 2, 4].
THREE_D = [
    {"accuracy": 0.90, "asr": 0.60, "adversary_cost": 10.0},
    {"accuracy": 0.80, "asr": 0.30, "adversary_cost": 40.0},
    {"accuracy": 0.60, "asr": 0.20, "adversary_cost": 100.0},
    {"accuracy": 0.80, "asr": 0.30, "adversary_cost": 30.0},
    {"accuracy": 0.85, "asr": 0.50, "adversary_cost": 20.0},
    {"accuracy": 0.50, "asr": 0.70, "adversary_cost": 5.0},
]
DIRS_3D = {"accuracy": "max", "asr": "min", "adversary_cost": "max"}


def test_pareto_front_2d_drops_dominated_and_keeps_duplicates():
    assert pareto_front(TWO_D, DIRS_2D) == [0, 1, 2, 4]


def test_pareto_front_3d():
    assert pareto_front(THREE_D, DIRS_3D) == [0, 1, 2, 4]


def test_directions_accept_enums_and_any_case():
    assert pareto_front(TWO_D, {"accuracy": Direction.MAX, "asr": "MIN"}) == [0, 1, 2, 4]


def test_flipping_a_direction_changes_the_front():
    # Both maximised: (0.90, 0.50) dominates every other point (highest accuracy AND highest asr).
    assert pareto_front(TWO_D, {"accuracy": "max", "asr": "max"}) == [0]


def test_knee_2d():
    # Normalised over the front {0, 1, 2, 4}: accuracy in [0.70, 0.90], asr in [0.10, 0.50]; g = 1 is best.
    #   g_acc = (acc - 0.70) / 0.20      -> 0: 1,   1: 0.5,  2: 0,  4: 0.5
    #   g_asr = (0.50 - asr) / 0.40      -> 0: 0,   1: 0.75, 2: 1,  4: 0.75
    #   squared distance to (1, 1)       -> 0: 1,   1: 0.3125, 2: 1, 4: 0.3125
    # 1 and 4 tie (duplicates); the lower index wins.
    assert knee_point(TWO_D, DIRS_2D) == 1


def test_knee_3d():
    # Normalised over the front {0, 1, 2, 4}: accuracy [0.6, 0.9], asr [0.2, 0.6], cost [10, 100].
    #   0: g = (1, 0, 0)                  d2 = 0 + 1 + 1                      = 2
    #   1: g = (2/3, 3/4, 1/3)            d2 = 1/9 + 1/16 + 4/9               = 0.618
    #   2: g = (0, 1, 1)                  d2 = 1
    #   4: g = (5/6, 1/4, 1/9)            d2 = 1/36 + 9/16 + 64/81            = 1.380
    assert knee_point(THREE_D, DIRS_3D) == 1


def test_weighted_score_2d_equal_weights():
    # Normalised over all six points: accuracy [0.60, 0.90], asr [0.10, 0.50].
    #   g_acc = (acc - 0.6) / 0.3 -> 1, 2/3, 1/3, 1/2, 2/3, 0
    #   g_asr = (0.5 - asr) / 0.4 -> 0, 3/4, 1,   1/4, 3/4, 1
    #   score = (g_acc + g_asr) / 2
    expected = [1 / 2, 17 / 24, 2 / 3, 3 / 8, 17 / 24, 1 / 2]
    assert weighted_score(TWO_D, {"accuracy": 1, "asr": 1}, DIRS_2D) == pytest.approx(expected, abs=1e-12)


def test_weighted_score_weights_are_normalised():
    # (3 g_acc + g_asr) / 4; scaling all weights by 10 changes nothing.
    expected = [3 / 4, (2 + 3 / 4) / 4, (1 + 1) / 4, (3 / 2 + 1 / 4) / 4, (2 + 3 / 4) / 4, 1 / 4]
    assert weighted_score(TWO_D, {"accuracy": 3, "asr": 1}, DIRS_2D) == pytest.approx(expected, abs=1e-12)
    assert weighted_score(TWO_D, {"accuracy": 30, "asr": 10}, DIRS_2D) == pytest.approx(expected, abs=1e-12)


def test_apply_constraints_bounds_are_inclusive():
    # min_accuracy 0.75 and max_asr 0.40: 0 fails asr, 2 and 5 fail accuracy; 3 sits exactly on both bounds.
    assert apply_constraints(TWO_D, {"min_accuracy": 0.75, "max_asr": 0.40}) == [1, 3, 4]
    assert apply_constraints(TWO_D, {}) == [0, 1, 2, 3, 4, 5]


def test_select_rules_on_the_2d_example():
    assert select(TWO_D, "knee", DIRS_2D) == 1
    # equal weights: 1 and 4 tie at 17/24 -> 1; accuracy-heavy weights: 0 scores 3/4, the maximum
    assert select(TWO_D, Rule.WEIGHTED, DIRS_2D, weights={"accuracy": 1, "asr": 1}) == 1
    assert select(TWO_D, "weighted", DIRS_2D, weights={"accuracy": 3, "asr": 1}) == 0
    # constrained_best, max_asr 0.30 -> feasible {1, 2, 4, 5}
    #   primary accuracy: 1 and 4 tie at 0.80 and on asr -> 1
    #   primary asr: 2 and 5 tie at 0.10; accuracy breaks it -> 2
    assert select(TWO_D, "constrained_best", DIRS_2D, constraints={"max_asr": 0.30}) == 1
    assert select(TWO_D, "constrained_best", DIRS_2D, constraints={"max_asr": 0.30}, primary="asr") == 2


def test_select_knee_after_constraints_3d():
    # max_asr 0.55 removes 0 and 5; the front of {1, 2, 3, 4} is {1, 2, 4} (3 is dominated by 1).
    # Over {1, 2, 4}: accuracy [0.6, 0.85], asr [0.2, 0.5], cost [20, 100]
    #   1: g = (0.8, 2/3, 0.25)      d2 = 0.04 + 1/9 + 0.5625  = 0.714
    #   2: g = (0, 1, 1)             d2 = 1
    #   4: g = (1, 0, 0)             d2 = 2
    assert select(THREE_D, "knee", DIRS_3D, constraints={"max_asr": 0.55}) == 1
    # weighted over the feasible {1, 2, 3, 4} with cost only: 2 has the largest cost
    weights = {"accuracy": 0, "asr": 0, "adversary_cost": 1}
    assert select(THREE_D, "weighted", DIRS_3D, weights=weights, constraints={"max_asr": 0.55}) == 2


def test_single_point_edge_case():
    one = [{"accuracy": 0.5, "asr": 0.5}]
    assert pareto_front(one, DIRS_2D) == [0]
    assert knee_point(one, DIRS_2D) == 0
    # every objective is constant: g = 1 everywhere (module rule), so the score is 1
    assert weighted_score(one, {"accuracy": 1, "asr": 2}, DIRS_2D) == [1.0]
    for rule in ("knee", "constrained_best"):
        assert select(one, rule, DIRS_2D) == 0


def test_all_duplicates_are_all_on_the_front():
    same = [{"accuracy": 0.7, "asr": 0.3}] * 3
    assert pareto_front(same, DIRS_2D) == [0, 1, 2]
    assert knee_point(same, DIRS_2D) == 0


def _brute_force_front(rows, signs):
    """Independent definition: i is on the front iff no j is >= on all objectives and > on one."""
    front = []
    for i, a in enumerate(rows):
        a2 = [s * x for s, x in zip(signs, a, strict=True)]
        beaten = False
        for j, b in enumerate(rows):
            b2 = [s * x for s, x in zip(signs, b, strict=True)]
            if i != j and min(y - x for x, y in zip(a2, b2, strict=True)) >= 0 and a2 != b2:
                beaten = True
        if not beaten:
            front.append(i)
    return front


@pytest.mark.parametrize("seed", range(5))
def test_front_matches_brute_force_and_knee_lies_on_it(seed):
    rng = random.Random(seed)
    keys = ["a", "b", "c"]
    dirs = {k: rng.choice(["max", "min"]) for k in keys}
    # values on a coarse grid so ties and duplicates are frequent
    points = [{k: rng.randint(0, 4) / 4 for k in keys} for _ in range(25)]
    signs = [1 if dirs[k] == "max" else -1 for k in keys]
    expected = _brute_force_front([[p[k] for k in keys] for p in points], signs)
    assert pareto_front(points, dirs) == expected
    knee = knee_point(points, dirs)
    assert knee in expected
    # the knee has the smallest distance to the ideal point among the front (recomputed here directly)
    lo = {k: min(points[i][k] for i in expected) for k in keys}
    hi = {k: max(points[i][k] for i in expected) for k in keys}

    def g(i, k):
        if hi[k] == lo[k]:
            return 1.0
        x = (points[i][k] - lo[k]) / (hi[k] - lo[k])
        return x if dirs[k] == "max" else 1 - x

    dist = {i: sum((1 - g(i, k)) ** 2 for k in keys) for i in expected}
    assert math.isclose(dist[knee], min(dist.values()), abs_tol=1e-12)
    # ties in distance go to the point better on the objectives in order (never to a position), then the lower index
    tied = [i for i in expected if math.isclose(dist[i], dist[knee], abs_tol=1e-12)]

    def oriented(i):
        return tuple(points[i][k] if dirs[k] == "max" else -points[i][k] for k in keys)

    assert knee == max(tied, key=lambda i: (oriented(i), -i))


def test_select_result_is_feasible_and_constrained_best_is_optimal():
    rng = random.Random(7)
    points = [{"accuracy": rng.random(), "asr": rng.random(), "adversary_cost": rng.random() * 50} for _ in range(40)]
    constraints = {"min_accuracy": 0.3, "max_asr": 0.7}
    feasible = [i for i, p in enumerate(points) if p["accuracy"] >= 0.3 and p["asr"] <= 0.7]  # independent filter
    assert apply_constraints(points, constraints) == feasible
    for rule, kw in itertools.product(
        ["knee", "weighted", "constrained_best"], [{}, {"weights": {"accuracy": 2, "asr": 1, "adversary_cost": 1}}]
    ):
        if (rule == "weighted") != bool(kw):
            continue
        assert select(points, rule, DIRS_3D, constraints=constraints, **kw) in feasible
    best = select(points, "constrained_best", DIRS_3D, constraints=constraints)
    assert points[best]["accuracy"] == max(points[i]["accuracy"] for i in feasible)


# ---------------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: pareto_front([], DIRS_2D), r"points is empty"),
        (lambda: pareto_front({"accuracy": 1}, DIRS_2D), r"points must be a sequence of mappings"),
        (
            lambda: pareto_front(TWO_D, {"accuracy": "maximize", "asr": "min"}),
            r"directions\['accuracy'\]='maximize'.*'max', 'min'",
        ),
        (lambda: pareto_front(TWO_D, {}), r"directions must be a non-empty mapping"),
        (lambda: pareto_front([{"accuracy": 0.5}], DIRS_2D), r"points\[0\] has no value for objective 'asr'"),
        (
            lambda: pareto_front([{"accuracy": float("nan"), "asr": 0.1}], DIRS_2D),
            r"points\[0\]\['accuracy'\]=nan must be a finite number",
        ),
        (lambda: pareto_front([{"accuracy": "high", "asr": 0.1}], DIRS_2D), r"points\[0\]\['accuracy'\]='high'"),
        (lambda: pareto_front([[0.5, 0.1]], DIRS_2D), r"points\[0\] must be a mapping"),
        (lambda: knee_point([], DIRS_2D), r"points is empty"),
        (
            lambda: weighted_score(TWO_D, {"accuracy": 1}, DIRS_2D),
            r"weights must have exactly the objectives \['accuracy', 'asr'\]",
        ),
        (lambda: weighted_score(TWO_D, {"accuracy": 1, "asr": 1, "cost": 1}, DIRS_2D), r"weights must have exactly"),
        (
            lambda: weighted_score(TWO_D, {"accuracy": -1, "asr": 1}, DIRS_2D),
            r"weights\['accuracy'\]=-1 must be a finite number >= 0",
        ),
        (lambda: weighted_score(TWO_D, {"accuracy": 0, "asr": 0}, DIRS_2D), r"all zero"),
        (lambda: weighted_score([], {"accuracy": 1, "asr": 1}, DIRS_2D), r"points is empty"),
        (
            lambda: apply_constraints(TWO_D, {"at_least_accuracy": 0.5}),
            r"'at_least_accuracy' must be named min_<metric> or max_<metric>",
        ),
        (
            lambda: apply_constraints(TWO_D, {"min_latency": 0.5}),
            r"constraint min_latency: no point has a value for 'latency'",
        ),
        (lambda: apply_constraints(TWO_D, {"min_accuracy": "high"}), r"min_accuracy='high' must be a finite number"),
        (
            lambda: select(TWO_D, "best", DIRS_2D),
            r"rule='best' is not supported; allowed values: 'robust_floor', 'knee', 'weighted', 'constrained_best'",
        ),
        (lambda: select(TWO_D, "weighted", DIRS_2D), r"rule='weighted' needs weights"),
        (
            lambda: select(TWO_D, "knee", DIRS_2D, weights={"accuracy": 1, "asr": 1}),
            r"weights are only used by rule='weighted'",
        ),
        (
            lambda: select(TWO_D, "constrained_best", DIRS_2D, primary="cost"),
            r"primary='cost' is not an objective; allowed values: 'accuracy', 'asr'",
        ),
        (lambda: select([], "knee", DIRS_2D), r"points is empty"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_no_feasible_point_names_constraints_and_best_seen():
    with pytest.raises(NoFeasiblePointError, match=r"min_accuracy=0\.95 \(best seen 0\.9\)") as info:
        select(TWO_D, "knee", DIRS_2D, constraints={"min_accuracy": 0.95})
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------------------------------------------------
# robust_floor, uncertainty-aware knee, reasons, ties never decided by position
#
#   trial  accuracy  robust  remark
#   t0     0.97      0.10    the most accurate
#   t1     0.955     0.60    within 0.02 of the best: eligible, most robust among the eligible
#   t2     0.90      0.80    most robust overall but 7 points below the best: not eligible with the 0.02 floor
#   t3     0.955     0.60    ties t1 on robust accuracy and accuracy; loses on id ("t3" > "t1")
ROBUST = [
    {"accuracy": 0.97, "robust_accuracy": 0.10, "robust_accuracy_ci_low": 0.05, "robust_accuracy_ci_high": 0.18},
    {"accuracy": 0.955, "robust_accuracy": 0.60, "robust_accuracy_ci_low": 0.51, "robust_accuracy_ci_high": 0.68},
    {"accuracy": 0.90, "robust_accuracy": 0.80},
    {"accuracy": 0.955, "robust_accuracy": 0.60},
]
DIRS_ROBUST = {"accuracy": "max", "robust_accuracy": "max"}


def test_robust_floor_picks_the_most_robust_trial_near_the_best_accuracy():
    ids = ["t0", "t1", "t2", "t3"]
    choice = choose(ROBUST, "robust_floor", DIRS_ROBUST, ids=ids)
    assert choice.index == 1
    assert "0.600 [0.510, 0.680]" in choice.reason and "3 of 4 trials" in choice.reason and "t3" in choice.reason
    # a looser floor admits t2, the most robust
    assert select(ROBUST, "robust_floor", DIRS_ROBUST, ids=ids, accuracy_floor=0.1) == 2
    # ids decide a complete tie, not the position: reversing the list keeps "t1"
    rev = list(reversed(ROBUST))
    assert rev[select(rev, "robust_floor", DIRS_ROBUST, ids=list(reversed(ids)))] is ROBUST[1]
    # the floor is relative to the best *feasible* trial
    assert select(ROBUST, "robust_floor", DIRS_ROBUST, constraints={"max_accuracy": 0.96}) == 1


def test_robust_floor_breaks_a_robustness_tie_by_the_next_objective():
    points = [{"accuracy": 0.95, "robust_accuracy": 0.5}, {"accuracy": 0.96, "robust_accuracy": 0.5}]
    assert select(points, "robust_floor", DIRS_ROBUST) == 1


def test_robust_floor_needs_both_metrics_and_a_valid_floor():
    with pytest.raises(ValueError, match="robust_accuracy"):
        select([{"accuracy": 0.9, "asr": 0.1}], "robust_floor", {"accuracy": "max", "asr": "min"})
    with pytest.raises(ValueError, match="accuracy_floor=1.5.*allowed values"):
        select(ROBUST, "robust_floor", DIRS_ROBUST, accuracy_floor=1.5)
    with pytest.raises(ValueError, match="ids has 1 entries for 4 points"):
        select(ROBUST, "robust_floor", DIRS_ROBUST, ids=["x"])


def test_knee_ignores_an_objective_whose_spread_is_within_its_uncertainty():
    # cost spans 23.6 .. 24.0 while its interval is +-0.5: noise. Without intervals the knee weighs it like
    # accuracy and picks 1 (better cost); with them only accuracy and robust accuracy count -> 0.
    dirs = {"accuracy": "max", "robust_accuracy": "max", "adversary_cost": "max"}
    pts = [
        {"accuracy": 0.95, "robust_accuracy": 0.50, "adversary_cost": 23.6},
        {"accuracy": 0.90, "robust_accuracy": 0.45, "adversary_cost": 24.0},
        {"accuracy": 0.60, "robust_accuracy": 0.70, "adversary_cost": 23.8},
    ]
    assert knee_point(pts, dirs) == 1
    noisy = [p | {"adversary_cost_ci_low": p["adversary_cost"] - 0.5,
                  "adversary_cost_ci_high": p["adversary_cost"] + 0.5} for p in pts]
    choice = choose(noisy, "knee", dirs)
    assert choice.index == 0 and "adversary_cost ignored" in choice.reason


def test_knee_with_no_separating_objective_falls_back_to_objective_order():
    pts = [{"accuracy": 0.90, "robust_accuracy": 0.52, "accuracy_ci_low": 0.8, "accuracy_ci_high": 0.99,
            "robust_accuracy_ci_low": 0.4, "robust_accuracy_ci_high": 0.6},
           {"accuracy": 0.91, "robust_accuracy": 0.50, "accuracy_ci_low": 0.8, "accuracy_ci_high": 0.99,
            "robust_accuracy_ci_low": 0.4, "robust_accuracy_ci_high": 0.6}]
    choice = choose(pts, "knee", DIRS_ROBUST)
    assert choice.index == 1 and "no objective separates" in choice.reason


# ---------------------------------------------------------------------------------------------------------
# flagged trials (masking, near chance, not adaptive, ...): never chosen while an unflagged one exists


@pytest.mark.parametrize("seed", range(40))
def test_a_flagged_trial_is_never_chosen_and_the_rest_choose_as_if_it_were_absent(seed):
    """Independent check: choosing with flags equals choosing among the unflagged points alone, for every rule."""
    rng = random.Random(seed)
    dirs = {"accuracy": "max", "robust_accuracy": "max", "asr": "min"}
    n = rng.randint(2, 8)
    points = [{"accuracy": round(rng.uniform(0.8, 1.0), 2), "robust_accuracy": round(rng.uniform(0, 1), 1),
               "asr": round(rng.uniform(0, 1), 1)} for _ in range(n)]
    flags = [rng.choice([None, None, "MASKING: input_gradients", "NEAR CHANCE (accuracy 0.1, chance 0.1)"])
             for _ in range(n)]
    if all(flags):
        flags[0] = None
    ids = [f"t{i}" for i in range(n)]
    kept = [i for i in range(n) if not flags[i]]
    for rule, extra in (("robust_floor", {}), ("knee", {}), ("constrained_best", {}),
                        ("weighted", {"weights": {"accuracy": 1, "robust_accuracy": 2, "asr": 1}})):
        choice = choose(points, rule, dirs, ids=ids, flags=flags, **extra)
        alone = select([points[i] for i in kept], rule, dirs, ids=[ids[i] for i in kept], **extra)
        assert choice.index == kept[alone], (rule, points, flags)
        aside = [ids[i] for i in range(n) if flags[i]]
        assert ("flagged, so not considered" in choice.reason) == bool(aside)
        assert all(f"{t} (" in choice.reason for t in aside)


def test_every_trial_flagged_refuses_unless_allowed():
    flags = ["MASKING: asr_at_large_eps", "NEAR CHANCE (accuracy 0.110, chance 0.100)", "unchecked", "unchecked"]
    ids = ["t0", "t1", "t2", "t3"]
    with pytest.raises(NoTrustworthyPointError, match=r"t0: MASKING: asr_at_large_eps; t1: NEAR CHANCE") as info:
        choose(ROBUST, "robust_floor", DIRS_ROBUST, ids=ids, flags=flags)
    assert isinstance(info.value, ValueError) and "--allow-flagged" in str(info.value)
    allowed = choose(ROBUST, "robust_floor", DIRS_ROBUST, ids=ids, flags=flags, allow_flagged=True)
    assert allowed.index == select(ROBUST, "robust_floor", DIRS_ROBUST, ids=ids)
    assert "FLAGGED" in allowed.reason and flags[allowed.index] in allowed.reason
    # allow_flagged changes nothing while an unflagged trial exists
    some = [None, *flags[1:]]
    assert choose(ROBUST, "robust_floor", DIRS_ROBUST, ids=ids, flags=some, allow_flagged=True).index == 0


def test_flags_and_constraints_together_and_bad_flags():
    flags = [None, "MASKING: input_gradients", None, None]
    # t1 is flagged; max_accuracy 0.96 leaves t1 and t3 of the rest -> t3 only
    choice = choose(ROBUST, "robust_floor", DIRS_ROBUST, ids=["t0", "t1", "t2", "t3"], flags=flags,
                    constraints={"max_accuracy": 0.96})
    assert choice.index == 3 and "2 unflagged and feasible" in choice.reason and "t1 (MASKING)" in choice.reason
    # the infeasible message reports the best seen among the unflagged trials
    with pytest.raises(NoFeasiblePointError, match=r"min_robust_accuracy=0\.7 \(best seen 0\.6\)"):
        choose(ROBUST, "robust_floor", DIRS_ROBUST, flags=[None, None, "unchecked", None],
               constraints={"min_robust_accuracy": 0.7})
    with pytest.raises(ValueError, match="flags must be a sequence with one entry per point"):
        choose(ROBUST, "robust_floor", DIRS_ROBUST, flags=[None])


def test_a_constraint_on_a_missing_or_nan_value_is_not_satisfied():
    points = [{"accuracy": 0.9, "asr": 0.2}, {"accuracy": 0.95, "asr": math.nan}, {"accuracy": 0.97}]
    assert apply_constraints(points, {"max_asr": 0.5}) == [0]
    assert apply_constraints(points, {"min_accuracy": 0.9}) == [0, 1, 2]


def test_a_robustness_tie_names_what_decided_it():
    tied = [{"accuracy": 0.95, "robust_accuracy": 0.5}, {"accuracy": 0.96, "robust_accuracy": 0.5}]
    assert "won on accuracy" in choose(tied, "robust_floor", DIRS_ROBUST, ids=["a", "b"]).reason
    same = [{"accuracy": 0.95, "robust_accuracy": 0.5}, {"accuracy": 0.95, "robust_accuracy": 0.5}]
    choice = choose(same, "robust_floor", DIRS_ROBUST, ids=["b", "a"])
    assert choice.index == 1 and "won on trial id" in choice.reason


def test_selection_metrics_lists_objectives_context_and_constrained_metrics_once():
    assert selection_metrics({"accuracy": "max", "asr": "min"}, {"max_asr": 0.5, "min_adversary_cost": 0.01}) == [
        "accuracy", "asr", "robust_accuracy", "adversary_cost"]
