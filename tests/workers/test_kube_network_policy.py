"""Issue 24, finding 3, on Kubernetes: SCHEMA AND CONTRACT TESTS, NOT A CLUSTER.

Model pods reach only DNS and the platform's ingest (anything, when a platform admin granted the
deployment egress) and only the platform's pods reach them: a NetworkPolicy per revision,
created before the revision's pods, replaced when the target's settings change, deleted once
its pods are gone. As in test_runtime_kubernetes.py, the runtime drives the real ``kubernetes``
client against ``kube_fake.FakeKubeAPI`` (no API server can run here) and every object is
validated against the Kubernetes 1.30 and 1.37 schemas. Whether a CNI enforces the policies is
not tested: that needs a cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.workers.kube_fake import FakeKubeAPI
from tests.workers.test_runtime_kubernetes import (  # noqa: F401 - `fake` is a fixture
    NS,
    fake,
    runtime_for,
    spec,
    validate,
)
from workers.runtimes import kube_policy
from workers.runtimes.base import ReplicaRuntimeError
from workers.runtimes.kube_policy import PolicyPeers, build_network_policy
from workers.runtimes.kubernetes import KubernetesRuntime

KEY = "MODELPORT_REPLICA_KEY"
PLATFORM_CLIENTS = {"namespaceSelector": {"matchLabels": {
    "kubernetes.io/metadata.name": "modelport"}},
    "podSelector": {"matchLabels": {"modelport.replica-client": "true"}}}
KUBE_DNS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
WEB_PODS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "modelport"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "modelport",
                                            "app.kubernetes.io/component": "web"}}}


def keyed_spec(**kwargs: Any) -> Any:
    s = spec(**kwargs)
    s.env[KEY] = "k" * 64
    return s


@pytest.fixture(autouse=True)
def fresh_sweeps() -> None:
    kube_policy._synced.clear()
    kube_policy._orphans.clear()


# --- the policy ---------------------------------------------------------------------------------
def test_a_revision_policy_admits_only_the_platform_and_lets_out_only_dns_and_ingest() -> None:
    body = build_network_policy(spec(), namespace=NS, peers=PolicyPeers(), port=8080)
    validate(body)
    assert body["metadata"]["name"] == "mp-iris-r3"
    assert body["spec"]["podSelector"] == {"matchLabels": {
        "modelport.managed": "1", "modelport.deployment": "iris", "modelport.revision": "3"}}
    assert body["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert body["spec"]["ingress"] == [{"from": [PLATFORM_CLIENTS],
                                        "ports": [{"protocol": "TCP", "port": 8080}]}]
    assert body["spec"]["egress"] == [
        {"to": [KUBE_DNS], "ports": [{"protocol": "UDP", "port": 53},
                                     {"protocol": "TCP", "port": 53}]},
        {"to": [WEB_PODS], "ports": [{"protocol": "TCP", "port": 8000}]}]
    assert body["metadata"]["annotations"]["modelport.egress"] == "false"


def test_egress_granted_by_a_platform_admin_opens_every_destination_and_nothing_else() -> None:
    body = build_network_policy(spec(egress=True), namespace=NS, peers=PolicyPeers(), port=8080)
    validate(body)
    assert body["spec"]["egress"] == [{}]  # one empty rule: anywhere
    assert body["spec"]["ingress"][0]["from"] == [PLATFORM_CLIENTS]  # still only the platform
    assert body["metadata"]["annotations"]["modelport.egress"] == "true"


def test_target_settings_choose_the_platform_pods_dns_and_addresses_outside_the_cluster() -> None:
    peers = PolicyPeers.from_settings({
        "platform_namespace": "ml-platform", "client_pods": {"example.com/role": "gateway"},
        "ingest_pods": {"app": "ingest"}, "ingest_port": 8001,
        "platform_cidrs": ["192.0.2.10/32", "2001:db8::/64"], "dns_namespace": "dns",
        "dns_pods": {"app": "coredns"}, "dns_cidrs": ["169.254.20.10"]})
    body = build_network_policy(spec(), namespace=NS, peers=peers, port=8080)
    validate(body)
    clients = body["spec"]["ingress"][0]["from"]
    assert clients == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ml-platform"}},
         "podSelector": {"matchLabels": {"example.com/role": "gateway"}}},
        {"ipBlock": {"cidr": "192.0.2.10/32"}}, {"ipBlock": {"cidr": "2001:db8::/64"}}]
    dns, ingest = body["spec"]["egress"]
    assert dns["to"][1] == {"ipBlock": {"cidr": "169.254.20.10/32"}}
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"app": "coredns"}}
    assert ingest["ports"] == [{"protocol": "TCP", "port": 8001}]
    assert ingest["to"][0]["podSelector"] == {"matchLabels": {"app": "ingest"}}


@pytest.mark.parametrize(("raw", "message"), [
    ({"colour": "blue"}, "unknown key"),
    ({"client_pods": "web"}, "label selector"),
    ({"client_pods": {"bad key!": "x"}}, "label key"),
    ({"ingest_pods": {"app": "not a value"}}, "label value"),
    ({"ingest_port": 0}, "port"),
    ({"ingest_port": True}, "port"),
    ({"platform_namespace": "Not_A_Namespace"}, "namespace"),
    ({"platform_cidrs": ["10.0.0.0/33"]}, "CIDR"),
    ({"dns_cidrs": "169.254.20.10"}, "list"),
    ("everything", "object"),
])
def test_bad_network_policy_settings_are_refused_naming_the_key(raw: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PolicyPeers.from_settings(raw)
    with pytest.raises(ReplicaRuntimeError, match=message):
        KubernetesRuntime(namespace=NS, api_client=object(), network_policy=raw)


def test_a_client_selector_that_would_admit_model_pods_is_refused(fake: FakeKubeAPI) -> None:  # noqa: F811
    """Platform and models in one namespace, with a selector model pods match: the policy
    would let one team's model call another's, so nothing is created."""
    rt = runtime_for(fake, network_policy={"platform_namespace": NS,
                                           "client_pods": {"modelport.managed": "1"}})
    with pytest.raises(ReplicaRuntimeError, match="selects the model pods themselves"):
        rt.start_replica(spec())
    assert fake.bodies("POST", "deployments") == []
    # The same namespace with a label model pods do not carry is fine.
    rt = runtime_for(fake, network_policy={"platform_namespace": NS})
    rt.start_replica(spec())
    assert fake.get("networkpolicies", "mp-iris-r3") is not None


# --- created, updated and deleted with the revision --------------------------------------------
def test_the_policy_exists_before_any_pod_of_the_revision(fake: FakeKubeAPI) -> None:  # noqa: F811
    rt = runtime_for(fake)
    rt.start_replica(keyed_spec())
    writes = [(r["method"], r["kind"]) for r in fake.requests if r["method"] != "GET"]
    assert writes.index(("POST", "networkpolicies")) < writes.index(("POST", "deployments"))
    (policy,) = fake.bodies("POST", "networkpolicies")
    validate(policy)
    dep = fake.get("deployments", "mp-iris-r3")
    # Selects exactly the revision's pods, labelled and annotated like its other objects.
    assert policy["spec"]["podSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert policy["metadata"]["labels"] == dep["metadata"]["labels"]
    assert policy["metadata"]["annotations"]["modelport.deployment-name"] == "iris"
    # A repeat start changes nothing.
    rt.start_replica(keyed_spec(replica=1))
    assert len(fake.bodies("POST", "networkpolicies")) == 1
    assert fake.calls("PUT", "networkpolicies") == []


def test_the_replica_key_travels_in_the_secret_and_pods_get_nothing_of_the_host(
        fake: FakeKubeAPI) -> None:  # noqa: F811
    rt = runtime_for(fake)
    rt.start_replica(keyed_spec())
    secret = fake.bodies("POST", "secrets")[0]
    assert secret["stringData"][KEY] == "k" * 64
    template = fake.get("deployments", "mp-iris-r3")["spec"]["template"]
    pod = template["spec"]
    (container,) = pod["containers"]
    assert KEY not in {e["name"] for e in container["env"]}
    assert "k" * 64 not in str(template)
    assert container["envFrom"] == [{"secretRef": {"name": "mp-iris-r3-env"}}]
    assert pod["automountServiceAccountToken"] is False
    for field in ("hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace"):
        assert not pod.get(field), field
    assert all("hostPath" not in v for v in pod["volumes"])
    assert all("hostPort" not in p for p in container["ports"])
    # The pods the ReplicaSet made are what the template says.
    for made in fake.pods():
        assert made["spec"]["automountServiceAccountToken"] is False
        assert not made["spec"].get("hostNetwork")


def test_a_revision_granted_egress_gets_its_own_open_policy(fake: FakeKubeAPI) -> None:  # noqa: F811
    rt = runtime_for(fake)
    rt.start_replica(spec(revision=3))
    rt.start_replica(spec(revision=4, egress=True))
    closed, opened = fake.get("networkpolicies", "mp-iris-r3"), fake.get("networkpolicies",
                                                                          "mp-iris-r4")
    assert len(closed["spec"]["egress"]) == 2 and opened["spec"]["egress"] == [{}]
    assert opened["spec"]["podSelector"]["matchLabels"]["modelport.revision"] == "4"


def test_changed_target_settings_replace_the_policy_guarded_by_its_version(
        fake: FakeKubeAPI) -> None:  # noqa: F811
    runtime_for(fake).start_replica(spec())
    before = fake.get("networkpolicies", "mp-iris-r3")
    moved = runtime_for(fake, network_policy={"platform_namespace": "ml-platform"})
    moved.start_replica(spec())
    (put,) = fake.calls("PUT", "networkpolicies")
    assert put["body"]["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    validate(put["body"])
    after = fake.get("networkpolicies", "mp-iris-r3")
    assert after["spec"]["ingress"][0]["from"][0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "ml-platform"}}


def test_removing_the_last_replica_deletes_the_policy_with_the_revision(
        fake: FakeKubeAPI) -> None:  # noqa: F811
    rt = runtime_for(fake)
    first = rt.start_replica(spec(replica=0)).id
    second = rt.start_replica(spec(replica=1)).id
    rt.remove_replica(first)
    assert fake.get("networkpolicies", "mp-iris-r3") is not None  # one pod is left
    rt.remove_replica(second)
    assert fake.get("networkpolicies", "mp-iris-r3") is None
    assert fake.get("deployments", "mp-iris-r3") is None


def test_a_terminating_pod_stays_fenced_until_it_is_gone(fake: FakeKubeAPI) -> None:  # noqa: F811
    """Deleting a Deployment leaves its pods running out their grace period: the policy stays
    until they are gone, then the sweep deletes it."""
    fake.pods_linger = True
    rt = runtime_for(fake)
    pod = rt.start_replica(spec()).id
    rt.delete_revision("mp-iris-r3")
    assert fake.get("deployments", "mp-iris-r3") is None
    assert fake.get("pods", pod)["metadata"]["deletionTimestamp"]
    assert fake.get("networkpolicies", "mp-iris-r3") is not None
    fake.finish_terminating()
    rt.sync_network_policies()  # orphaned once: kept (a start may be under way)
    assert fake.get("networkpolicies", "mp-iris-r3") is not None
    rt.sync_network_policies()  # orphaned twice at the same version: deleted
    assert fake.get("networkpolicies", "mp-iris-r3") is None


# --- the sweep ------------------------------------------------------------------------------------
def test_the_sweep_fences_revisions_started_before_policies_existed(fake: FakeKubeAPI) -> None:  # noqa: F811
    rt = runtime_for(fake)
    rt.start_replica(spec(deployment="iris", revision=3))
    rt.start_replica(spec(deployment="wine", revision=1, egress=True))
    fake.add_pod("not-ours", {"app": "other"})
    with fake.lock:  # as if both revisions predated this release
        fake.objects["networkpolicies"].clear()
    rt.list_replicas()  # the beat's sweep over the namespace
    iris, wine = fake.get("networkpolicies", "mp-iris-r3"), fake.get("networkpolicies",
                                                                      "mp-wine-r1")
    for body in (iris, wine):
        validate(body)
    assert iris["spec"] == build_network_policy(spec(), namespace=NS, peers=PolicyPeers(),
                                                port=8080)["spec"]
    # Egress is never granted by the sweep: only start_replica knows the admin's decision.
    assert len(wine["spec"]["egress"]) == 2
    assert "modelport.replica" not in iris["metadata"]["labels"]
    assert len(fake.objects["networkpolicies"]) == 2


def test_the_sweep_follows_settings_keeps_granted_egress_and_drops_orphans(
        fake: FakeKubeAPI) -> None:  # noqa: F811
    runtime_for(fake).start_replica(spec(egress=True))
    orphan = build_network_policy(spec(deployment="gone", revision=9), namespace=NS,
                                  peers=PolicyPeers(), port=8080)
    runtime_for(fake).networking.create_namespaced_network_policy(NS, orphan)
    moved = runtime_for(fake, network_policy={"client_pods": {"role": "gateway"}})
    moved.sync_network_policies()
    policy = fake.get("networkpolicies", "mp-iris-r3")
    assert policy["spec"]["egress"] == [{}]
    assert policy["spec"]["ingress"][0]["from"][0]["podSelector"] == {
        "matchLabels": {"role": "gateway"}}
    assert fake.get("networkpolicies", "mp-gone-r9") is not None  # seen orphaned once
    moved.sync_network_policies()
    assert fake.get("networkpolicies", "mp-gone-r9") is None
    (delete,) = fake.calls("DELETE", "networkpolicies")
    assert delete["body"]["preconditions"]["resourceVersion"]
    # Nothing to change: no writes.
    before = len([r for r in fake.requests if r["method"] != "GET"])
    moved.sync_network_policies()
    assert len([r for r in fake.requests if r["method"] != "GET"]) == before


def test_the_sweep_never_deletes_the_policy_of_a_revision_being_started(
        fake: FakeKubeAPI) -> None:  # noqa: F811
    """Between two sweeps a start gives the orphan-looking policy its Deployment, or rewrites
    it: either way it stays."""
    rt = runtime_for(fake)
    policy = build_network_policy(spec(revision=5), namespace=NS, peers=PolicyPeers(),
                                  port=8080)
    rt.networking.create_namespaced_network_policy(NS, policy)  # the start's first step
    rt.sync_network_policies()  # sees it with no Deployment yet
    rt.start_replica(spec(revision=5))  # the start goes on: the same policy, then the rest
    rt.sync_network_policies()
    assert fake.get("networkpolicies", "mp-iris-r5") is not None

    orphan = build_network_policy(spec(revision=6), namespace=NS, peers=PolicyPeers(),
                                  port=8080)
    rt.networking.create_namespaced_network_policy(NS, orphan)
    rt.sync_network_policies()
    moved = runtime_for(fake, network_policy={"platform_namespace": "ml-platform"})
    moved._apply_policy(moved.network_policy_for(spec(revision=6)))  # rewritten meanwhile
    rt.sync_network_policies()  # orphaned again, but at another version: kept
    assert fake.get("networkpolicies", "mp-iris-r6") is not None
    assert fake.calls("DELETE", "networkpolicies") == []


def test_the_sweep_runs_at_most_once_a_minute_and_never_fails_a_listing(
        fake: FakeKubeAPI) -> None:  # noqa: F811
    rt = runtime_for(fake)
    rt.start_replica(spec())
    rt.list_replicas()
    rt.list_replicas()
    assert len(fake.calls("GET", "networkpolicies")) == 2  # start's read + one sweep's list
    kube_policy._synced.clear()
    fake.forbidden.add("networkpolicies")  # a Role without them: the listing still answers
    assert [s.deployment for s in rt.list_replicas()] == ["iris"]
    with pytest.raises(ReplicaRuntimeError, match="403"):  # but starting a replica does not
        rt.start_replica(spec(revision=4))


# --- the target's health -------------------------------------------------------------------------
@pytest.mark.django_db
def test_target_health_warns_until_the_namespace_has_a_default_deny(
        fake: FakeKubeAPI, admin_user: Any, tmp_path: Any,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml
    from django.test import Client

    from compute import targets
    from compute.targets import clear_cache
    from tests.fixtures import bearer_client

    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "prod",
        "clusters": [{"name": "prod", "cluster": {"server": fake.url}}],
        "users": [{"name": "prod", "user": {"token": "t"}}],
        "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "prod"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    targets.create_target(actor=admin_user, name="cluster", kind="kubernetes",
                           kube_context="prod", namespace=NS)
    api = bearer_client(admin_user)
    clear_cache()
    body = api.get("/api/v1/targets/cluster/health/?fresh=1").json()
    assert body["reachable"] is True
    (warning,) = body["warnings"]
    assert "no default-deny NetworkPolicy" in warning
    browser = Client()
    browser.force_login(admin_user)
    page = browser.get("/capacity/targets/").content.decode()
    assert 'data-warning="isolation"' in page and "no default-deny" in page

    shipped = Path(__file__).resolve().parents[2] / "platform/kubernetes/networkpolicy.yaml"
    deny = next(d for d in yaml.safe_load_all(shipped.read_text()) if d)
    runtime_for(fake).networking.create_namespaced_network_policy(NS, {
        **deny, "metadata": {**deny["metadata"], "namespace": NS}})
    clear_cache()
    assert api.get("/api/v1/targets/cluster/health/?fresh=1").json()["warnings"] == []
    fake.forbidden.add("networkpolicies")
    clear_cache()
    (warning,) = api.get("/api/v1/targets/cluster/health/?fresh=1").json()["warnings"]
    assert "403" in warning and "networkpolicies" in warning
