"""Pure builders: every child (docs/architecture.md §3), both standby modes, either primary."""

from __future__ import annotations

import base64
import dataclasses
import shlex
from collections.abc import Callable
from typing import Any

import pytest

from gocd_ha_operator.api.constants import (
    LABEL_ROLE,
    LABEL_SIDE,
    Side,
    operator_namespace_from,
)
from gocd_ha_operator.builders import BuildInputs, build_children
from gocd_ha_operator.builders.gocd import build_gocd_deployment, build_gocd_service
from gocd_ha_operator.builders.postgres import (
    build_postgres_configmap,
    build_postgres_role_service,
    build_postgres_statefulset,
)
from gocd_ha_operator.builders.secrets import escape_properties_value, render_db_properties
from gocd_ha_operator.rules.topology import Topology
from tests.support.clusters import CREDENTIALS
from tests.support.pss import restricted_violations

Inputs = Callable[..., BuildInputs]
WARM = {"gocd": {"image": "gocd/gocd-server:v21.2.0"}}
COLD = {"gocd": {"image": "gocd/gocd-server:v26.1.0"}}


def by_name(children: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["kind"], c["metadata"]["name"]): c for c in children}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def container(pod_owner: dict[str, Any], name: str) -> dict[str, Any]:
    spec = pod_owner["spec"]["template"]["spec"]
    return next(
        c for c in [*spec.get("initContainers", []), *spec["containers"]] if c["name"] == name
    )


EXPECTED_CHILDREN = {
    ("Secret", "ci-postgres-superuser"),
    ("Secret", "ci-postgres-replication"),
    ("Secret", "ci-postgres-gocd"),
    ("Secret", "ci-postgres-operator"),
    ("Secret", "ci-bc-token"),
    ("Secret", "ci-gocd-db-a"),
    ("Secret", "ci-gocd-db-b"),
    ("ConfigMap", "ci-postgres"),
    ("PersistentVolumeClaim", "ci-shared"),
    ("StatefulSet", "ci-pg-a"),
    ("StatefulSet", "ci-pg-b"),
    ("Service", "ci-pg-a"),
    ("Service", "ci-pg-b"),
    ("Service", "ci-pg-primary"),
    ("Service", "ci-pg-standby"),
    ("PersistentVolumeClaim", "ci-gocd-a"),
    ("PersistentVolumeClaim", "ci-gocd-b"),
    ("Deployment", "ci-gocd-a"),
    ("Deployment", "ci-gocd-b"),
    ("Service", "ci-gocd-a"),
    ("Service", "ci-gocd-b"),
    ("Service", "ci-gocd"),
    ("NetworkPolicy", "ci-postgres"),
    ("PodDisruptionBudget", "ci-postgres"),
    # The instance guards' identity (issue #12); the Lease itself is created by the reconcile.
    ("ServiceAccount", "ci-pg-guard"),
    ("Role", "ci-pg-guard"),
    ("RoleBinding", "ci-pg-guard"),
}


@pytest.mark.parametrize("spec", [WARM, COLD], ids=["warm", "cold"])
def test_every_child_of_the_design_is_built(inputs: Inputs, spec: dict[str, Any]) -> None:
    children = build_children(inputs(spec))
    assert set(by_name(children)) == EXPECTED_CHILDREN
    assert all(c["metadata"]["namespace"] == "build" for c in children)


def test_builders_are_deterministic(inputs: Inputs) -> None:
    assert build_children(inputs(COLD)) == build_children(inputs(COLD))


def test_every_child_carries_the_standard_labels(inputs: Inputs) -> None:
    for child in build_children(inputs(COLD)):
        labels = child["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "ci", child["metadata"]["name"]
        assert labels["app.kubernetes.io/managed-by"] == "gocd-ha-operator"
        assert labels["app.kubernetes.io/name"] == "gocd"
        assert labels["app.kubernetes.io/component"]
        assert "ownerReferences" not in child["metadata"]


def test_existing_claim_replaces_the_shared_pvc(inputs: Inputs) -> None:
    spec = {"sharedStorage": {"size": None, "storageClassName": None, "existingClaim": "team-rwx"}}
    built = inputs(spec={})
    cluster_body = built.cluster.model_copy(
        update={
            "spec": built.cluster.spec.model_copy(
                update={
                    "shared_storage": built.cluster.spec.shared_storage.model_copy(
                        update={
                            "size": None,
                            "storage_class_name": None,
                            "existing_claim": "team-rwx",
                        }
                    )
                }
            )
        }
    )
    del spec
    children = by_name(
        build_children(BuildInputs(cluster_body, built.topology, CREDENTIALS, built.operator_image))
    )
    assert ("PersistentVolumeClaim", "ci-shared") not in children
    volumes = children[("StatefulSet", "ci-pg-a")]["spec"]["template"]["spec"]["volumes"]
    shared = next(v for v in volumes if v["name"] == "shared")
    assert shared["persistentVolumeClaim"]["claimName"] == "team-rwx"


@pytest.mark.parametrize("primary", ["a", "b"])
def test_role_services_follow_the_primary(inputs: Inputs, primary: Side) -> None:
    built = inputs(COLD, primary=primary)
    standby: Side = "b" if primary == "a" else "a"
    assert build_postgres_role_service(built, "primary")["spec"]["selector"][LABEL_SIDE] == primary
    assert build_postgres_role_service(built, "standby")["spec"]["selector"][LABEL_SIDE] == standby
    assert build_gocd_service(built)["spec"]["selector"][LABEL_SIDE] == primary


def test_fenced_primary_is_selected_by_nothing_and_its_server_stopped(inputs: Inputs) -> None:
    built = inputs(COLD, primary="a", fenced=frozenset({"a"}))
    assert build_gocd_service(built)["spec"]["selector"][LABEL_SIDE] == "none"
    assert build_postgres_role_service(built, "primary")["spec"]["selector"][LABEL_SIDE] == "none"
    assert build_gocd_deployment(built, "a")["spec"]["replicas"] == 0
    # Fencing alone keeps Postgres up: a switchover still needs it to hand over its last WAL.
    assert build_postgres_statefulset(built, "a")["spec"]["replicas"] == 1


def test_stopped_side_has_no_postgres(inputs: Inputs) -> None:
    cluster = inputs(COLD).cluster
    built = BuildInputs(cluster, Topology("a", stopped=frozenset({"a"})), CREDENTIALS, "img")
    assert build_postgres_statefulset(built, "a")["spec"]["replicas"] == 0
    assert build_postgres_statefulset(built, "b")["spec"]["replicas"] == 1


def test_promoted_server_can_start_in_maintenance_mode(inputs: Inputs) -> None:
    cluster = inputs(COLD).cluster
    built = BuildInputs(cluster, Topology("b", maintenance=frozenset({"b"})), CREDENTIALS, "img")
    env = env_of(container(build_gocd_deployment(built, "b"), "gocd-server"))
    assert "-Dgocd.server.start.in.maintenance.mode=true" in shlex.split(
        env["GOCD_SERVER_JVM_OPTS"]
    )


@pytest.mark.parametrize("primary", ["a", "b"])
def test_role_lives_in_the_configmap_not_the_pod_template(inputs: Inputs, primary: Side) -> None:
    built = inputs(COLD, primary=primary)
    data = build_postgres_configmap(built)["data"]
    assert data[f"role-{primary}"] == "primary"
    assert data["role-" + ("b" if primary == "a" else "a")] == "standby"
    sts_a = build_postgres_statefulset(built, "a")
    env = env_of(container(sts_a, "postgres"))
    assert env["GOCDHA_ROLE"] == {"configMapKeyRef": {"name": "ci-postgres", "key": "role-a"}}
    # The pod template is identical whichever side is primary: promotion restarts nothing.
    other = inputs(COLD, primary="b" if primary == "a" else "a")
    assert sts_a["spec"]["template"] == build_postgres_statefulset(other, "a")["spec"]["template"]
    assert LABEL_ROLE not in sts_a["spec"]["template"]["metadata"]["labels"]
    assert sts_a["metadata"]["labels"][LABEL_ROLE] == ("primary" if primary == "a" else "standby")


def test_postgres_instance_environment(inputs: Inputs) -> None:
    sts = build_postgres_statefulset(inputs(COLD), "b")
    env = env_of(container(sts, "postgres"))
    assert env["GOCDHA_SIDE"] == "b"
    assert env["GOCDHA_PEER_HOST"] == "ci-pg-a.build.svc"
    assert env["GOCDHA_ARCHIVE_DIR"] == "/shared/wal"
    assert env["PGDATA"] == "/var/lib/postgresql/data/pgdata"
    assert env["GOCDHA_REPLICATION_PASSWORD_FILE"] == "/opt/gocdha/secrets/replication/password"
    assert container(sts, "postgres")["command"] == ["bash", "/opt/gocdha/config/entrypoint.sh"]
    # Credentials reach the instance as files, never as environment values.
    for value in env.values():
        assert not any(secret in str(value) for secret in CREDENTIALS.values())


def test_postgres_configmap_carries_config_and_scripts(inputs: Inputs) -> None:
    data = build_postgres_configmap(inputs(COLD))["data"]
    assert {
        "postgresql.conf",
        "pg_hba.conf",
        "entrypoint.sh",
        "archive-wal.sh",
        "restore-wal.sh",
        "cleanup-wal.sh",
        "backup.sh",
        "recover.sh",
    } <= set(data)
    assert "recovery.conf" not in "".join(data.values())
    assert "wal_keep_segments" not in data["postgresql.conf"]
    assert "trigger_file" not in data["postgresql.conf"]


def test_postgres_uses_the_alpine_uid_for_alpine_images(inputs: Inputs) -> None:
    debian = build_postgres_statefulset(inputs(COLD), "a")["spec"]["template"]["spec"][
        "securityContext"
    ]
    alpine = build_postgres_statefulset(inputs({"postgres": {"image": "postgres:16-alpine"}}), "a")
    assert debian["runAsUser"] == 999
    assert alpine["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 70


def test_postgres_data_survives_resource_deletion(inputs: Inputs) -> None:
    sts = build_postgres_statefulset(inputs(COLD), "a")
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["resources"]["requests"]["storage"] == "20Gi"


@pytest.mark.parametrize("primary", ["a", "b"])
def test_warm_standby_runs_in_standby_mode_pointing_at_the_primary(
    inputs: Inputs, primary: Side
) -> None:
    built = inputs(
        WARM | {"gocd": {"image": "gocd/gocd-server:v21.2.0", "jvmOptions": ["-Xmx2g", "-Dx=a b"]}},
        primary=primary,
    )
    standby: Side = "b" if primary == "a" else "a"
    standby_env = env_of(container(build_gocd_deployment(built, standby), "gocd-server"))
    primary_env = env_of(container(build_gocd_deployment(built, primary), "gocd-server"))
    expected = [
        "-Xmx2g",
        "-Dx=a b",
        "-Dgo.server.mode=standby",
        f"-Dbc.primary.url=http://ci-gocd-{primary}.build.svc:8153",
    ]
    # The image evals the variable: the options survive shell word splitting intact.
    assert shlex.split(standby_env["GOCD_SERVER_JVM_OPTS"]) == expected
    assert standby_env["GOCD_SERVER_JVM_OPTIONS"] == standby_env["GOCD_SERVER_JVM_OPTS"]
    assert shlex.split(primary_env["GOCD_SERVER_JVM_OPTS"]) == ["-Xmx2g", "-Dx=a b"]
    assert build_gocd_deployment(built, standby)["spec"]["replicas"] == 1


@pytest.mark.parametrize("side", ["a", "b"])
def test_warm_token_and_db_properties_are_placed_in_the_config_dir(
    inputs: Inputs, side: Side
) -> None:
    deployment = build_gocd_deployment(inputs(WARM), side)
    mounts = {m["mountPath"]: m for m in container(deployment, "gocd-server")["volumeMounts"]}
    assert (
        mounts["/godata/config/business-continuity-token"]["subPath"] == "business-continuity-token"
    )
    assert mounts["/godata/config/db.properties"]["subPath"] == "db.properties"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["bc-token"]["secret"]["secretName"] == "ci-bc-token"
    assert volumes["db-properties"]["secret"]["secretName"] == f"ci-gocd-db-{side}"


def test_user_token_secret_is_used_as_is(inputs: Inputs) -> None:
    built = inputs(
        {
            "gocd": {
                "image": "gocd/gocd-server:v21.2.0",
                "businessContinuity": {"tokenSecretRef": {"name": "my-token", "key": "token"}},
            }
        }
    )
    names = {(c["kind"], c["metadata"]["name"]) for c in build_children(built)}
    assert ("Secret", "ci-bc-token") not in names
    volumes = {
        v["name"]: v
        for v in build_gocd_deployment(built, "a")["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["bc-token"]["secret"]["secretName"] == "my-token"
    assert volumes["bc-token"]["secret"]["items"] == [
        {"key": "token", "path": "business-continuity-token"}
    ]


def test_addon_is_installed_by_an_init_container_for_gocd_20_5(inputs: Inputs) -> None:
    built = inputs(
        {
            "gocd": {
                "image": "gocd/gocd-server:v20.5.0",
                "businessContinuity": {
                    "addon": {"url": "https://files.example/bc.jar", "sha256": "a" * 64}
                },
            }
        }
    )
    for side in ("a", "b"):
        init = container(build_gocd_deployment(built, side), "install-addon")
        assert init["command"][:2] == ["gocd-ha-operator", "install-addon"]
        assert "https://files.example/bc.jar" in init["command"]
        assert "/godata/addons" in init["command"]


@pytest.mark.parametrize("primary", ["a", "b"])
def test_cold_standby_is_stopped_and_primary_restores_and_mirrors(
    inputs: Inputs, primary: Side
) -> None:
    built = inputs(COLD, primary=primary)
    standby: Side = "b" if primary == "a" else "a"
    standby_deployment = build_gocd_deployment(built, standby)
    primary_deployment = build_gocd_deployment(built, primary)
    assert standby_deployment["spec"]["replicas"] == 0
    assert primary_deployment["spec"]["replicas"] == 1
    restore = container(primary_deployment, "restore")
    assert restore["command"] == [
        "gocd-ha-operator",
        "restore",
        "--source",
        "/shared/gocd",
        "--target",
        "/godata",
        "--side",
        primary,
    ]
    agent = container(primary_deployment, "sync-agent")
    assert agent["command"][:2] == ["gocd-ha-operator", "sync-agent"]
    assert "--target" in agent["command"] and "/shared/gocd" in agent["command"]
    env = env_of(container(standby_deployment, "gocd-server"))
    assert "standby" not in env["GOCD_SERVER_JVM_OPTS"]
    assert all(
        not mount["mountPath"].endswith("business-continuity-token")
        for mount in container(primary_deployment, "gocd-server")["volumeMounts"]
    )


def test_artifacts_volume_is_mounted_on_both_servers(inputs: Inputs) -> None:
    built = inputs({"gocd": {"artifacts": {"size": "100Gi", "storageClassName": "nfs"}}})
    children = by_name(build_children(built))
    assert children[("PersistentVolumeClaim", "ci-artifacts")]["spec"]["accessModes"] == [
        "ReadWriteMany"
    ]
    for side in ("a", "b"):
        mounts = container(children[("Deployment", f"ci-gocd-{side}")], "gocd-server")[
            "volumeMounts"
        ]
        assert any(m["mountPath"] == "/godata/artifacts" for m in mounts)


@pytest.mark.parametrize("side", ["a", "b"])
def test_db_properties_point_at_the_own_side(inputs: Inputs, side: Side) -> None:
    text = render_db_properties(inputs(COLD), side)
    assert f"db.url=jdbc\\:postgresql\\://ci-pg-{side}.build.svc\\:5432/gocd" in text
    assert "db.user=gocd" in text
    assert f"db.password={CREDENTIALS.gocd_password}" in text
    secret = by_name(build_children(inputs(COLD)))[("Secret", f"ci-gocd-db-{side}")]
    assert base64.b64decode(secret["data"]["db.properties"]).decode() == text


def test_properties_escaping() -> None:
    assert escape_properties_value("a=b:c#d!e\\f") == "a\\=b\\:c\\#d\\!e\\\\f"
    assert escape_properties_value(" lead") == "\\ lead"
    assert escape_properties_value("é") == "\\u00e9"


def test_credential_secrets_hold_the_given_credentials(inputs: Inputs) -> None:
    children = by_name(build_children(inputs(COLD)))

    def value(name: str, key: str) -> str:
        return base64.b64decode(children[("Secret", name)]["data"][key]).decode()

    assert value("ci-postgres-superuser", "password") == CREDENTIALS.superuser_password
    assert value("ci-postgres-replication", "username") == "gocdha_replication"
    assert value("ci-postgres-operator", "username") == "gocdha_operator"
    assert value("ci-bc-token", "business-continuity-token") == CREDENTIALS.bc_token


@pytest.mark.parametrize(
    "spec",
    [
        WARM,
        COLD,
        {
            "gocd": {
                "image": "gocd/gocd-server:v20.5.0",
                "businessContinuity": {"addon": {"url": "https://x/a.jar", "sha256": "a" * 64}},
            }
        },
    ],
    ids=["warm", "cold", "addon"],
)
@pytest.mark.parametrize("primary", ["a", "b"])
def test_pod_templates_are_pod_security_restricted(
    inputs: Inputs, spec: dict[str, Any], primary: Side
) -> None:
    for child in build_children(inputs(spec, primary=primary)):
        if child["kind"] in ("StatefulSet", "Deployment"):
            pod = child["spec"]["template"]["spec"]
            assert restricted_violations(pod) == [], child["metadata"]["name"]
            assert pod["automountServiceAccountToken"] is False
            for c in [*pod.get("initContainers", []), *pod["containers"]]:
                assert c["resources"]["requests"] and c["resources"]["limits"], c["name"]


def test_long_running_containers_have_probes(inputs: Inputs) -> None:
    children = by_name(build_children(inputs(WARM)))
    pg = container(children[("StatefulSet", "ci-pg-a")], "postgres")
    gocd = container(children[("Deployment", "ci-gocd-a")], "gocd-server")
    for c in (pg, gocd):
        assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(c)
    assert gocd["livenessProbe"]["httpGet"]["path"] == "/go/api/v1/health"
    assert pg["readinessProbe"]["exec"]["command"][0] == "pg_isready"


def test_gocd_uses_the_image_user_and_root_group(inputs: Inputs) -> None:
    pod = build_gocd_deployment(inputs(COLD), "a")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["runAsGroup"] == 0
    assert build_gocd_deployment(inputs(COLD), "a")["spec"]["strategy"] == {"type": "Recreate"}


def test_network_policy_admits_only_peer_gocd_backup_jobs_and_operator(inputs: Inputs) -> None:
    policy = by_name(build_children(inputs(COLD)))[("NetworkPolicy", "ci-postgres")]
    sources = policy["spec"]["ingress"][0]["from"]
    components = [
        s["podSelector"]["matchLabels"].get("app.kubernetes.io/component") for s in sources
    ]
    assert components == ["postgres", "gocd-server", "backup", None]
    # The cluster's own pods (and its backup Jobs): a podSelector alone means "in the policy's
    # namespace".
    assert all(set(s) == {"podSelector"} for s in sources[:3])
    # The operator: ONE peer with both selectors, so only its pods in its namespace qualify.
    assert sources[3] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gocd-ha-operator"}},
        "podSelector": {"matchLabels": {"gocdha.io/operator": "true"}},
    }
    assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 5432}]


def test_network_policy_follows_the_operator_namespace(inputs: Inputs) -> None:
    built = dataclasses.replace(inputs(COLD), operator_namespace="platform-ops")
    policy = by_name(build_children(built))[("NetworkPolicy", "ci-postgres")]
    operator_peer = policy["spec"]["ingress"][0]["from"][-1]
    assert operator_peer["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "platform-ops"}
    }


def test_operator_namespace_comes_from_the_environment() -> None:
    assert operator_namespace_from({}) == "gocd-ha-operator"
    assert operator_namespace_from({"GOCDHA_OPERATOR_NAMESPACE": "ops"}) == "ops"
    for bad in ("Ops", "-x", "a" * 64, "ops ns"):
        with pytest.raises(ValueError, match=r"GOCDHA_OPERATOR_NAMESPACE: .* is not a namespace"):
            operator_namespace_from({"GOCDHA_OPERATOR_NAMESPACE": bad})


def test_gocd_service_type_and_annotations(inputs: Inputs) -> None:
    svc = build_gocd_service(
        inputs({"gocd": {"service": {"type": "LoadBalancer", "annotations": {"a": "b"}}}})
    )
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["metadata"]["annotations"] == {"a": "b"}


@pytest.mark.parametrize("spec", [WARM, COLD])
def test_a_cluster_takes_at_most_three_cluster_ips(inputs: Inputs, spec: dict[str, Any]) -> None:
    """The instance Services are headless (their one pod never moves); only the three role
    Services, whose selectors a promotion moves, keep a stable virtual IP."""
    services = {
        child["metadata"]["name"]: child["spec"]
        for child in build_children(inputs(spec))
        if child["kind"] == "Service"
    }
    virtual = {name for name, spec_ in services.items() if spec_.get("clusterIP") != "None"}
    assert virtual == {"ci-pg-primary", "ci-pg-standby", "ci-gocd"}
    for name in ("ci-pg-a", "ci-pg-b", "ci-gocd-a", "ci-gocd-b"):
        assert services[name]["clusterIP"] == "None", name
        assert services[name]["publishNotReadyAddresses"] is True, name
    # Headless: clients dial the Service port on the pod, so each port is the container's.
    containers = {
        (port["name"], port["containerPort"])
        for child in build_children(inputs(spec))
        if child["kind"] in ("StatefulSet", "Deployment")
        for container in child["spec"]["template"]["spec"]["containers"]
        for port in container.get("ports") or []
    }
    for name in ("ci-pg-a", "ci-pg-b", "ci-gocd-a", "ci-gocd-b"):
        for port in services[name]["ports"]:
            assert (port["targetPort"], port["port"]) in containers, (name, port)
