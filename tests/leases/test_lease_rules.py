"""The Lease timings, the guard's and the operator's pure rules, and the guard's rendered RBAC."""

from __future__ import annotations

import copy
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from gocd_ha_operator.api import conditions as cond
from gocd_ha_operator.api.constants import FENCE_LEAD_SECONDS, LEASE_EXPIRY_MARGIN_SECONDS
from gocd_ha_operator.api.credentials import ClusterCredentials
from gocd_ha_operator.api.spec import parse_cluster
from gocd_ha_operator.api.status import LeaseStatus
from gocd_ha_operator.api.validation import SpecError
from gocd_ha_operator.builders import BuildInputs, build_children
from gocd_ha_operator.rules import lease as rules
from gocd_ha_operator.rules.topology import Topology

ROOT = Path(__file__).resolve().parents[2]
BODY: dict[str, Any] = {
    "apiVersion": "gocdha.io/v1alpha1",
    "kind": "GoCDHACluster",
    "metadata": {"name": "ci", "namespace": "build"},
    "spec": {
        "gocd": {"image": "gocd/gocd-server:v26.1.0"},
        "sharedStorage": {"size": "10Gi", "storageClassName": "nfs"},
    },
}


def cluster_with(**failover: int) -> Any:
    body = copy.deepcopy(BODY)
    body["spec"]["failover"] = failover
    return parse_cluster(body)


def problems(**failover: int) -> list[str]:
    with pytest.raises(SpecError) as error:
        cluster_with(**failover)
    return [str(p) for p in error.value.problems]


# --- timings -------------------------------------------------------------------------------------


@pytest.mark.parametrize("unavailable", [10, 11, 30, 60, 61, 600, 3600])
def test_default_timings_always_hold_the_ordering(unavailable: int) -> None:
    timings = cluster_with(primaryUnavailableSeconds=unavailable).spec.failover.lease_timings
    assert 2 * timings.retry_period <= timings.renew_deadline < timings.lease_duration
    assert timings.lease_duration <= unavailable


def test_default_timings_for_the_default_spec() -> None:
    timings = cluster_with().spec.failover.lease_timings
    assert (timings.lease_duration, timings.renew_deadline, timings.retry_period) == (30, 20, 4)


def test_explicit_values_win_and_the_rest_is_derived() -> None:
    timings = cluster_with(leaseDurationSeconds=15).spec.failover.lease_timings
    assert (timings.lease_duration, timings.renew_deadline, timings.retry_period) == (15, 10, 2)


@pytest.mark.parametrize(
    ("failover", "field", "says"),
    [
        (
            {"renewDeadlineSeconds": 30, "leaseDurationSeconds": 30},
            "spec.failover.renewDeadlineSeconds",
            "must be below leaseDurationSeconds",
        ),
        (
            {"renewDeadlineSeconds": 40},
            "spec.failover.renewDeadlineSeconds",
            "must be below leaseDurationSeconds (30)",
        ),
        (
            {"leaseDurationSeconds": 90},
            "spec.failover.leaseDurationSeconds",
            "at most primaryUnavailableSeconds (60)",
        ),
        (
            {"retryPeriodSeconds": 11},
            "spec.failover.retryPeriodSeconds",
            "at most half of renewDeadlineSeconds (20)",
        ),
        ({"leaseDurationSeconds": 2}, "spec.failover.leaseDurationSeconds", "greater than or"),
    ],
)
def test_timing_errors_name_the_field(failover: dict[str, int], field: str, says: str) -> None:
    found = problems(**failover)
    assert any(p.startswith(f"{field}: ") and says in p for p in found), found


def test_crd_refuses_explicit_values_out_of_order() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "gocdhaclusters.gocdha.io.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    failover = schema["properties"]["spec"]["properties"]["failover"]
    rules_text = [v["rule"] for v in failover["x-kubernetes-validations"]]
    assert any("self.renewDeadlineSeconds < self.leaseDurationSeconds" in r for r in rules_text)
    assert failover["properties"]["leaseDurationSeconds"]["minimum"] == 3


# --- the guard -----------------------------------------------------------------------------------

ME = "ci-pg-a"


def view(postgres: rules.LocalPostgres, holder: str | None, now: float) -> rules.GuardView:
    return rules.GuardView(
        identity=ME, postgres=postgres, lease_holder=holder, deadline=10, now=now
    )


def test_a_primary_is_fenced_the_lead_before_its_deadline_and_not_earlier() -> None:
    primary = rules.LocalPostgres.PRIMARY
    assert not rules.must_fence(view(primary, ME, 10 - FENCE_LEAD_SECONDS - 0.01))
    assert rules.must_fence(view(primary, ME, 10 - FENCE_LEAD_SECONDS))


def test_a_postgres_the_guard_cannot_query_counts_as_a_primary_at_the_deadline() -> None:
    assert rules.must_fence(view(rules.LocalPostgres.DOWN, ME, 9.5))
    assert not rules.must_fence(view(rules.LocalPostgres.STANDBY, ME, 100))


def test_a_starting_standby_is_not_fenced_for_not_answering() -> None:
    starting = rules.GuardView(
        identity=ME,
        postgres=rules.LocalPostgres.DOWN,
        lease_holder="ci-pg-b",
        deadline=0,
        now=100,
        may_be_primary=False,
    )
    assert not rules.must_fence(starting)


def test_a_lease_naming_the_other_side_fences_a_primary_at_once() -> None:
    assert rules.must_fence(view(rules.LocalPostgres.PRIMARY, "ci-pg-b", 0))
    assert not rules.must_fence(view(rules.LocalPostgres.STANDBY, "ci-pg-b", 0))


@pytest.mark.parametrize(
    ("holder", "postgres", "role", "grace", "renews"),
    [
        (ME, rules.LocalPostgres.PRIMARY, None, False, True),
        (ME, rules.LocalPostgres.STANDBY, None, False, True),  # handed over, not promoted yet
        (ME, rules.LocalPostgres.DOWN, "primary", True, True),  # a start needs the grant
        (ME, rules.LocalPostgres.DOWN, "primary", False, False),  # cannot start: let go
        (ME, rules.LocalPostgres.DOWN, "standby", True, False),
        (ME, rules.LocalPostgres.DOWN, None, True, False),  # role unknown: no grant
        ("ci-pg-b", rules.LocalPostgres.PRIMARY, "primary", True, False),  # never takes it
        (None, rules.LocalPostgres.PRIMARY, "primary", True, False),
    ],
)
def test_when_the_guard_renews(
    holder: str | None, postgres: rules.LocalPostgres, role: str | None, grace: bool, renews: bool
) -> None:
    assert (
        rules.may_renew(
            identity=ME,
            lease_holder=holder,
            postgres=postgres,
            configured_role=role,
            startup_grace_open=grace,
        )
        is renews
    )


def test_a_renewal_counts_from_its_start() -> None:
    assert rules.renewed_deadline(100.0, 20) == 120.0


# --- the operator --------------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_expiry_counts_from_first_sight_when_the_guard_clock_is_behind() -> None:
    seen = rules.lease_view(
        holder=ME, renew_time=T0 - timedelta(minutes=5), duration_seconds=30, first_seen=T0
    )
    assert seen.expires_at == T0 + timedelta(seconds=30 + LEASE_EXPIRY_MARGIN_SECONDS)


def test_expiry_counts_from_the_stamp_when_the_guard_clock_is_ahead() -> None:
    ahead = T0 + timedelta(seconds=7)
    seen = rules.lease_view(holder=ME, renew_time=ahead, duration_seconds=30, first_seen=T0)
    assert seen.expires_at == ahead + timedelta(seconds=30 + LEASE_EXPIRY_MARGIN_SECONDS)


def test_failover_waits_for_expiry_plus_margin() -> None:
    seen = rules.lease_view(holder=ME, renew_time=T0, duration_seconds=30, first_seen=T0)
    just_before = T0 + timedelta(seconds=30 + LEASE_EXPIRY_MARGIN_SECONDS - 0.001)
    why = rules.failover_blocked("ci", seen, "a", just_before)
    assert why is not None and "held by ci-pg-a" in why
    assert rules.failover_blocked("ci", seen, "a", seen.expires_at) is None


def test_an_unreadable_lease_blocks_failover_and_a_handed_over_one_does_not() -> None:
    assert rules.failover_blocked("ci", None, "a", T0) is not None
    handed = rules.lease_view(holder="ci-pg-b", renew_time=T0, duration_seconds=30, first_seen=T0)
    assert rules.failover_blocked("ci", handed, "a", T0) is None


# --- the guard's RBAC as rendered ----------------------------------------------------------------


def rendered() -> list[dict[str, Any]]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gocd_ha_operator.cli.main",
            "render",
            "-f",
            str(ROOT / "examples" / "automatic-failover-cluster.yaml"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_the_guard_role_reaches_only_its_lease_and_the_role_configmap() -> None:
    documents = rendered()
    name = next(d for d in documents if d["kind"] == "ConfigMap")["metadata"]["name"]
    cluster = name.removesuffix("-postgres")
    role = next(d for d in documents if d["kind"] == "Role")
    assert role["metadata"]["name"] == f"{cluster}-pg-guard"
    grants = {
        (group, resource, verb, tuple(rule["resourceNames"]))
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert grants == {
        ("coordination.k8s.io", "leases", "get", (f"{cluster}-primary",)),
        ("coordination.k8s.io", "leases", "patch", (f"{cluster}-primary",)),
        ("coordination.k8s.io", "leases", "watch", (f"{cluster}-primary",)),
        ("", "configmaps", "get", (f"{cluster}-postgres",)),
    }
    # No list, no create; a watch only of that one Lease (a metadata.name field selector).
    assert all("resourceNames" in rule for rule in role["rules"])
    assert not any("secrets" in rule["resources"] for rule in role["rules"])
    binding = next(d for d in documents if d["kind"] == "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": f"{cluster}-pg-guard",
            "namespace": role["metadata"]["namespace"],
        }
    ]


def test_only_the_guard_container_gets_the_token() -> None:
    for sts in (d for d in rendered() if d["kind"] == "StatefulSet"):
        pod = sts["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["shareProcessNamespace"] is True
        assert pod["serviceAccountName"].endswith("-pg-guard")
        mounts = {c["name"]: {m["mountPath"] for m in c["volumeMounts"]} for c in pod["containers"]}
        token = "/var/run/secrets/kubernetes.io/serviceaccount"
        assert token in mounts["instance-guard"]
        assert token not in mounts["postgres"]
        guard = next(c for c in pod["containers"] if c["name"] == "instance-guard")
        assert guard["command"][:2] == ["gocd-ha-operator", "instance-guard"]


def test_a_timing_edit_changes_the_configmap_not_the_database_pods() -> None:
    """The guards read their timings from <name>-postgres: editing them rolls no Postgres pod."""
    credentials = ClusterCredentials.generate()

    def children(**failover: int) -> dict[tuple[str, str], Any]:
        inputs = BuildInputs(cluster_with(**failover), Topology(primary="a"), credentials, "op:1")
        return {(c["kind"], c["metadata"]["name"]): c for c in build_children(inputs)}

    before, after = children(), children(primaryUnavailableSeconds=30)
    assert before[("StatefulSet", "ci-pg-a")] == after[("StatefulSet", "ci-pg-a")]
    data = after[("ConfigMap", "ci-postgres")]["data"]
    assert (
        data["lease-duration-seconds"],
        data["renew-deadline-seconds"],
        data["retry-period-seconds"],
    ) == ("15", "10", "2")
    assert before[("ConfigMap", "ci-postgres")]["data"]["lease-duration-seconds"] == "30"


def _lease_status(renew: datetime, *, holder: str = "ci-pg-a", valid: bool = True) -> LeaseStatus:
    return LeaseStatus(
        holder=holder,
        holder_side=rules.side_of_holder("ci", holder),
        renew_time=renew.isoformat(),
        timeline=1,
        expires_at=cond.rfc3339(renew + timedelta(seconds=10)),
        valid=valid,
    )


def test_a_renewal_alone_changes_the_recorded_lease_once_per_expiry() -> None:
    """An idle cluster: renewals every second, one status change per recorded expiry."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    recorded = _lease_status(start)
    writes = 0
    for second in range(1, 31):
        now = start + timedelta(seconds=second)
        kept = rules.lease_status_to_record(recorded, _lease_status(now), now=now, precise=False)
        if kept != recorded:
            writes += 1
            recorded = kept
        # Never an expiry in the past while the Lease is valid.
        assert recorded.expires_at is not None and recorded.expires_at > now.strftime("%FT%TZ")
    assert writes == 3  # at 10 s, 20 s, 30 s


def test_the_recorded_lease_follows_at_once_what_matters() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    recorded = _lease_status(start)
    now = start + timedelta(seconds=1)
    for observed in (
        _lease_status(now, holder="ci-pg-b"),  # a hand-over
        _lease_status(now, valid=False),  # expired
        _lease_status(now).model_copy(update={"timeline": 2}),
    ):
        assert rules.lease_status_to_record(recorded, observed, now=now, precise=False) == observed
    # While the primary is unavailable or a promotion runs: every observation as read.
    observed = _lease_status(now)
    assert rules.lease_status_to_record(recorded, observed, now=now, precise=True) == observed
