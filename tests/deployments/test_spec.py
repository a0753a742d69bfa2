"""The typed deployment spec (``deployments/spec.py``): the API's dicts parse into it, it
stores as the dicts the API always stored, and the service verbs take it as well as dicts."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.errors import InvalidInput
from deployments import services
from deployments.models import STRATEGIES
from deployments.spec import (
    DeploymentSpec,
    Resources,
    Strategy,
    StrategyKind,
    as_resources,
    as_strategy,
)
from tests.deployments.test_reconcile import create, fast  # noqa: F401


@pytest.mark.parametrize(("raw", "stored"), [
    (None, {"type": "rolling"}),
    ({}, {"type": "rolling"}),
    ({"type": "blue_green"}, {"type": "blue_green"}),
    ({"type": "canary"}, {"type": "canary", "steps": [10, 50, 100], "interval_s": 60}),
    ({"type": "canary", "steps": [5, 100], "interval_s": 1.5},
     {"type": "canary", "steps": [5, 100], "interval_s": 1.5}),
    ({"type": "linear"}, {"type": "linear", "step_percent": 25, "interval_s": 60}),
    ({"type": "shadow", "percent": 10},
     {"type": "shadow", "percent": 10, "tolerance": 1e-6}),
])
def test_a_strategy_stores_as_the_api_always_stored_it(raw, stored):
    strategy = Strategy.parse(raw)
    assert strategy.as_dict() == stored
    assert list(strategy.as_dict()) == list(stored)  # the same key order, too
    assert as_strategy(strategy) is strategy


def test_the_kinds_are_the_models_choices():
    assert STRATEGIES == tuple(StrategyKind) == ("rolling", "blue_green", "canary", "linear",
                                                 "shadow")


@pytest.mark.parametrize(("raw", "message"), [
    ({"type": "bogus"}, "strategy.type must be one of rolling, blue_green, canary, linear"),
    ({"type": "rolling", "steps": [100]}, "apply only to canary"),
    ({"type": "canary", "steps": [50, 10, 100]}, "increasing percentages"),
    ({"type": "shadow", "interval_s": 5}, "apply only to canary and linear"),
    ("rolling", "strategy must be an object"),
])
def test_a_bad_strategy_is_refused_with_the_field(raw, message):
    with pytest.raises(InvalidInput, match=message) as caught:
        Strategy.parse(raw)
    assert caught.value.field == "strategy"


def test_resources_parse_with_defaults_and_limits():
    assert Resources.parse(None) == Resources(Decimal("1"), 1024, 0)
    assert Resources.parse({"cpu": 0.5, "gpus": 1}) == Resources(Decimal("0.5"), 1024, 1)
    for bad in ({"cpu": True}, {"cpu": 0.001}, {"memory_mb": 32}, {"disk": 1}, [1]):
        with pytest.raises(InvalidInput):
            Resources.parse(bad)
    typed = Resources(Decimal("2"), 2048, 0)
    assert as_resources(typed) is typed


def test_the_first_problem_reported_is_the_replicas_then_resources_then_strategy(settings):
    with pytest.raises(InvalidInput) as caught:
        DeploymentSpec.parse(replicas="x", resources={"cpu": -1}, strategy={"type": "bogus"})
    assert caught.value.field == "replicas"
    with pytest.raises(InvalidInput) as caught:
        DeploymentSpec.parse(replicas="2", resources={"cpu": -1}, strategy={"type": "bogus"})
    assert caught.value.field == "resources"
    assert DeploymentSpec.parse(replicas=" 2 ").replicas == 2


@pytest.mark.usefixtures("fast")
def test_the_verbs_take_typed_specs(engineer, team, v1, v2):
    d = create(engineer, team, resources=Resources(Decimal("0.25"), 512, 0),
               strategy=Strategy(StrategyKind.CANARY, steps=(20, 100), interval_s=30))
    d.refresh_from_db()
    assert (d.cpu, d.memory_mb, d.gpus) == (Decimal("0.25"), 512, 0)
    assert d.strategy == {"type": "canary", "steps": [20, 100], "interval_s": 30}
    services.update_deployment(actor=engineer, deployment=d,
                               strategy=Strategy(StrategyKind.LINEAR, step_percent=50,
                                                 interval_s=10))
    services.update_deployment(actor=engineer, deployment=d, resources={"memory_mb": 1024})
    d.refresh_from_db()
    assert d.strategy == {"type": "linear", "step_percent": 50, "interval_s": 10}
    assert (d.cpu, d.memory_mb) == (Decimal("0.25"), 1024)  # a dict changes only its keys
