"""Autoscaling from the Python client and the ``modelport`` CLI against a live Modelport server:
``deploy --autoscale``, ``autoscale NAME`` (change, turn on, ``--off``) and what ``status``
prints, idle included. Reconciles are recorded, not run (no container: the scaler's own runs on
Docker are tests/deployments' Docker tests); here the server's answers to the client are
tested."""

from __future__ import annotations

import argparse
import json

import pytest
from modelport import Client, cli, cli_scale
from modelport.errors import BadRequest

from deployments.models import Deployment, DeploymentStatus, Revision
from registry.models import RegisteredModel
from teams.models import Team
from teams.roles import Role
from tests.deployments.conftest import make_version
from tests.factories import PASSWORD, MembershipFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)
DEPLOY = ["deploy", "iris-auto", "--team", "ml-search", "--model", "iris", "--version", "1",
          "--cpu", "0.5", "--memory-mb", "512"]


@pytest.fixture
def engineer(db):
    user = UserFactory(username="cora")
    MembershipFactory(team=TeamFactory(slug="ml-search"), user=user, role=Role.ENGINEER)
    return user


@pytest.fixture
def token(live_server, engineer) -> str:
    return Client(live_server.url, token="").create_token("cora", PASSWORD,
                                                          name="tests")["token"]


@pytest.fixture
def base(live_server, token, engineer, iris_dir, monkeypatch) -> list[str]:
    model = RegisteredModel.objects.create(name="iris", team=Team.objects.get(slug="ml-search"),
                                           created_by=engineer)
    make_version(model, 1, iris_dir)
    monkeypatch.setattr("deployments.passes.enqueue_reconcile", lambda pk: None)
    return ["--url", live_server.url, "--token", token]


def test_cli_deploy_autoscale_then_change_and_turn_off(base, capsys):
    assert cli.main([*base, "--json", *DEPLOY, "--autoscale", "1:3", "--metric", "rps",
                     "--target", "20", "--scale-down-delay", "60", "--idle-to-zero",
                     "600"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["autoscaling"] == {"min_replicas": 1, "max_replicas": 3, "metric": "rps",
                                      "target": 20, "scale_down_delay_s": 60,
                                      "idle_to_zero_after_s": 600}
    assert created["desired_replicas"] == 1

    # Change only the bounds: the rest stays, no new revision.
    assert cli.main([*base, "autoscale", "iris-auto", "--min", "2", "--max", "5"]) == 0
    text = capsys.readouterr().out
    assert "iris-auto: 2-5 replicas at 20 req/s per replica; scale down after 60 s; to zero " \
           "after 600 s without a request; 2 replica(s) now" in text
    d = Deployment.objects.get(name="iris-auto")
    assert d.autoscaling["metric"] == "rps" and d.replicas == 2 and d.revision == 1
    # A new metric without a target takes that metric's default; 'off' never goes to zero.
    assert cli.main([*base, "--json", "autoscale", "iris-auto", "--metric", "cpu",
                     "--idle-to-zero", "off"]) == 0
    changed = json.loads(capsys.readouterr().out)["autoscaling"]
    assert (changed["metric"], changed["target"], changed["idle_to_zero_after_s"]) == \
        ("cpu", 70, None)

    assert cli.main([*base, "autoscale", "iris-auto", "--off"]) == 0
    assert "fixed replica count (autoscaling off); 2 replica(s) now" in capsys.readouterr().out
    assert Deployment.objects.get(name="iris-auto").autoscaling == {}
    assert Revision.objects.filter(deployment__name="iris-auto").count() == 1


def test_cli_autoscale_turns_it_on_and_refuses_what_the_server_refuses(base, capsys):
    assert cli.main([*base, *DEPLOY, "--replicas", "2"]) == 0
    capsys.readouterr()
    assert cli.main([*base, "autoscale", "iris-auto", "--min", "1"]) == 6
    assert "turning autoscaling on needs --max" in capsys.readouterr().err
    assert cli.main([*base, "autoscale", "iris-auto", "--min", "3", "--max", "2"]) == 6
    assert "max_replicas (2) must be at least min_replicas (3)" in capsys.readouterr().err
    assert cli.main([*base, "autoscale", "iris-auto", "--max", "4", "--target", "0"]) == 6
    assert "target" in capsys.readouterr().err
    assert Deployment.objects.get(name="iris-auto").autoscaling == {}
    assert cli.main([*base, "autoscale", "iris-auto", "--max", "4"]) == 0
    assert Deployment.objects.get(name="iris-auto").autoscaling["max_replicas"] == 4
    assert cli.main([*base, "autoscale", "iris-auto", "--off", "--max", "3"]) == 6
    assert "--off takes no other setting" in capsys.readouterr().err
    assert cli.main([*base, "autoscale", "nope", "--max", "4"]) == 4


def test_cli_deploy_options_without_autoscale_are_refused(base, capsys):
    assert cli.main([*base, *DEPLOY, "--target", "3"]) == 6
    assert "need --autoscale MIN:MAX" in capsys.readouterr().err
    assert not Deployment.objects.exists()
    with pytest.raises(SystemExit) as usage:
        cli.main([*base, *DEPLOY, "--autoscale", "one:two"])
    assert usage.value.code == 2


def test_cli_status_says_idle_scaled_to_zero_with_the_bounds(base, capsys):
    assert cli.main([*base, *DEPLOY, "--autoscale", "1:4", "--idle-to-zero", "120"]) == 0
    capsys.readouterr()
    Deployment.objects.filter(name="iris-auto").update(
        replicas=0, status=DeploymentStatus.IDLE, scaled_at="2026-01-01T00:00:00Z",
        status_message="Idle (scaled to zero): the next request starts a replica.")
    assert cli.main([*base, "status", "iris-auto"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("iris-auto: idle (scaled to zero) (revision 1)")
    assert "autoscaling: 1-4 replicas at 4 requests in flight per replica; scale down after " \
           "300 s; to zero after 120 s without a request" in text
    assert "idle (scaled to zero): the next request starts a replica (last scaled " \
           "2026-01-01T00:00:00Z)" in text
    assert cli.main([*base, "--json", "status", "iris-auto"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "idle" and shown["desired_replicas"] == 0
    # Waiting for it is done: an idle deployment answers its next request.
    with Client(base[1], base[3]) as mp:
        assert mp.wait_until_healthy("iris-auto", timeout=5)["status"] == "idle"


def test_client_set_autoscaling(base):
    with Client(base[1], base[3]) as mp:
        mp.deploy(name="iris-auto", team="ml-search", model="iris", version=1, cpu=0.5,
                  memory_mb=512, autoscaling={"max_replicas": 2})
        shown = mp.set_autoscaling("iris-auto", {"min_replicas": 2, "max_replicas": 3},
                                   replicas=3)
        assert shown["desired_replicas"] == 3 and shown["autoscaling"]["min_replicas"] == 2
        with pytest.raises(BadRequest) as refused:
            mp.set_autoscaling("iris-auto", {"max_replicas": 2, "metric": "gpu"})
        assert "metric must be one of" in str(refused.value)
        off = mp.set_autoscaling("iris-auto", None)
        assert off["autoscaling"] is None and off["desired_replicas"] == 3


def test_bounds_and_describe_need_no_server():
    assert cli_scale.bounds("2:6") == (2, 6) and cli_scale.bounds("4") == (1, 4)
    with pytest.raises(argparse.ArgumentTypeError):
        cli_scale.bounds("a:b")
    assert cli_scale.idle_seconds("off") is None and cli_scale.idle_seconds("30") == 30
    assert cli_scale.describe(None) == "fixed replica count (autoscaling off)"
