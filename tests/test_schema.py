"""The one validation system (``qshield.schema``): every frozen config built on it refuses unknown keys and bad
values with a message naming the field, the value and what is allowed; round-trips through plain dicts (what
MLflow params, Tune configs and saved models hold); pickles (Ray ships configs and spaces between processes)."""

from __future__ import annotations

import pickle

import pytest

from qshield.evaluation import MaskingConfig, MinEpsConfig
from qshield.models import FusionMode, ModelConfig
from qshield.quantum import CircuitConfig
from qshield.schema import Config, Eps, field_rule, integer, parse_number, registry_choice, validate_value
from qshield.training import TrainConfig

CONFIGS = [
    (ModelConfig, {"arch": "hybrid", "n_qubits": "5", "noise": "Depolarizing", "noise_strength": "0.01"}),
    (TrainConfig, {"method": "pgd_at", "pgd_eps": "8/255", "epochs": 3.0, "shuffle": "false"}),
    (CircuitConfig, {"n_qubits": 3, "depth": 2, "entanglement": "ring"}),
    (MaskingConfig, {"n_examples": 8, "eps_schedule": [0.1, 0.5], "eot_iter": 2}),
    (MinEpsConfig, {"eps_max": "1/2", "rounds": 3}),
]


@pytest.mark.parametrize("cls, data", CONFIGS, ids=[c.__name__ for c, _ in CONFIGS])
def test_configs_round_trip_pickle_and_refuse_unknown_keys(cls: type[Config], data: dict) -> None:
    cfg = cls.from_dict(data)
    assert cls.from_dict(cfg.to_dict()) == cfg
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    with pytest.raises(ValueError, match=rf"unknown {cls.__name__} field\(s\) \['bogus'\]; allowed fields: "):
        cls.from_dict({**data, "bogus": 1})
    with pytest.raises((TypeError, ValueError)):  # frozen
        setattr(cfg, next(iter(data)), None)


def test_strings_as_mlflow_returns_them_are_read():
    m = ModelConfig.from_dict({"n_qubits": "5", "noise": "Depolarizing", "noise_strength": "0.01",
                               "quantum_trainable": "False", "fusion_weights": "[0.25, 0.75]"})
    assert (m.n_qubits, m.noise.value, m.noise_strength, m.quantum_trainable, m.fusion_weights) == (
        5, "depolarizing", 0.01, False, (0.25, 0.75))
    assert TrainConfig(method="pgd_at", pgd_eps="8/255").pgd_eps == pytest.approx(8 / 255)


@pytest.mark.parametrize("value, expected", [(3, 3.0), ("1e-3", 1e-3), ("8/255", 8 / 255), (" 2 / 4 ", 0.5),
                                             (True, None), ("x", None), ("1/0", None), (None, None)])
def test_parse_number(value, expected):
    got = parse_number(value)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_rules_name_the_field_and_what_is_allowed():
    assert validate_value(Eps, "8/255", "eps") == pytest.approx(8 / 255)
    with pytest.raises(ValueError, match=r"^eps=1\.5 is out of range; allowed values: a number in \[0, 1\]$"):
        validate_value(Eps, 1.5, "eps")
    with pytest.raises(ValueError, match=r"^k=True is invalid \(a bool\); allowed values: an integer in 1\.\.3$"):
        validate_value(integer(1, 3), True, "k")
    assert validate_value(integer(1, 3, nullable=True), None, "k") is None
    assert validate_value(integer(1, 3, nullable=True), "none", "k") is None
    rule = field_rule(ModelConfig, "n_qubits")
    assert (rule.kind, rule.lo, rule.hi, rule.nullable) == ("int", 2, 16, True)
    with pytest.raises(KeyError, match="ModelConfig has no field 'qubits'"):
        field_rule(ModelConfig, "qubits")


def test_registry_choice_lists_the_registry_and_pickles():
    Colour = registry_choice("Colour", ["red", "dark-blue"], module=__name__)
    globals()["Colour"] = Colour  # a module-level enum, as registry_choice asks
    assert Colour.values() == ("red", "dark-blue") and Colour.DARK_BLUE.value == "dark-blue"
    assert pickle.loads(pickle.dumps(Colour.RED)) is Colour.RED
    assert Colour.parse("RED", "colour") is Colour.RED
    with pytest.raises(ValueError, match=r"colour='green' is not supported; allowed values: 'red', 'dark-blue'"):
        Colour.parse("green", "colour")
    from qshield.models.fusion import FUSIONS

    assert FusionMode.values() == tuple(FUSIONS)
    assert pickle.loads(pickle.dumps(FusionMode.GATED)) is FusionMode.GATED
