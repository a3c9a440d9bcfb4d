"""The GoCD Deployment's parts, each alone: what the common, Warm, Cold and artifacts parts add."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gocd_ha_operator.builders import BuildInputs
from gocd_ha_operator.builders.gocd import (
    PodParts,
    artifacts_pod_parts,
    build_gocd_deployment,
    cold_pod_parts,
    common_pod_parts,
    gocd_pod_parts,
    warm_pod_parts,
)

Inputs = Callable[..., BuildInputs]
WARM: dict[str, Any] = {"gocd": {"image": "gocd/gocd-server:v21.2.0"}}
OLD_WARM: dict[str, Any] = {
    "gocd": {
        "image": "gocd/gocd-server:v20.5.0",
        "businessContinuity": {"addon": {"url": "https://example.org/bc.jar", "sha256": "0" * 64}},
    }
}
COLD: dict[str, Any] = {"gocd": {"image": "gocd/gocd-server:v26.1.0"}}


def names(items: tuple[dict[str, Any], ...]) -> list[str]:
    return [item["name"] for item in items]


def mount_paths(parts: PodParts) -> list[str]:
    return [mount["mountPath"] for mount in parts.server_mounts]


def test_common_part_mounts_the_side_data_and_its_db_properties(inputs: Inputs) -> None:
    parts = common_pod_parts(inputs(COLD), "b")
    assert mount_paths(parts) == [
        "/godata",
        "/home/go",
        "/godata/config/db.properties",
        "/opt/gocdha/ca",  # the cluster CA db.properties verifies Postgres with
    ]
    volumes = {volume["name"]: volume for volume in parts.volumes}
    assert list(volumes) == ["godata", "postgres-ca", "db-properties", "bc-token"]
    # Only the CA certificate of the server Secret: never the server's key.
    assert volumes["postgres-ca"]["secret"] == {
        "secretName": "ci-server-tls",
        "defaultMode": 0o444,
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    assert volumes["godata"]["persistentVolumeClaim"]["claimName"].endswith("-b")
    assert volumes["db-properties"]["secret"]["secretName"].endswith("-b")
    assert parts.init_containers == () and parts.sidecars == ()


def test_warm_part_adds_the_token_file_and_nothing_else_from_21_0(inputs: Inputs) -> None:
    parts = warm_pod_parts(inputs(WARM))
    assert mount_paths(parts) == ["/godata/config/business-continuity-token"]
    assert parts.volumes == () and parts.init_containers == () and parts.sidecars == ()


def test_warm_part_installs_the_addon_for_gocd_20_5(inputs: Inputs) -> None:
    parts = warm_pod_parts(inputs(OLD_WARM))
    assert names(parts.init_containers) == ["install-addon"]
    command = parts.init_containers[0]["command"]
    assert command[:2] == ["gocd-ha-operator", "install-addon"]
    assert "0" * 64 in command
    assert names(parts.volumes) == ["tmp"]
    assert parts.sidecars == ()


def test_cold_part_on_the_primary_restores_and_runs_the_sync_agent(inputs: Inputs) -> None:
    parts = cold_pod_parts(inputs(COLD, primary="a"), "a")
    assert names(parts.volumes) == ["shared", "sync-agent-tls"]  # its HTTPS certificate
    assert names(parts.init_containers) == ["restore"]
    assert names(parts.sidecars) == ["sync-agent"]
    assert parts.sidecars[0]["ports"][0]["name"] == "sync-status"
    assert parts.server_mounts == ()


def test_cold_part_on_the_standby_only_names_the_shared_volume(inputs: Inputs) -> None:
    parts = cold_pod_parts(inputs(COLD, primary="a"), "b")
    assert names(parts.volumes) == ["shared"]
    assert parts.init_containers == () and parts.sidecars == () and parts.server_mounts == ()


def test_artifacts_part_is_empty_without_artifacts(inputs: Inputs) -> None:
    assert artifacts_pod_parts(inputs(COLD)) == PodParts()


def test_artifacts_part_mounts_an_existing_claim_or_ours(inputs: Inputs) -> None:
    existing = artifacts_pod_parts(inputs({"gocd": {"artifacts": {"existingClaim": "arts"}}}))
    assert mount_paths(existing) == ["/godata/artifacts"]
    assert existing.volumes[0]["persistentVolumeClaim"]["claimName"] == "arts"
    ours = artifacts_pod_parts(
        inputs({"gocd": {"artifacts": {"size": "1Gi", "storageClassName": "nfs"}}})
    )
    assert ours.volumes[0]["persistentVolumeClaim"]["claimName"].endswith("-artifacts")


def test_the_mode_picks_one_part_and_the_deployment_uses_all_of_them(inputs: Inputs) -> None:
    warm = inputs({**WARM, "gocd": {**WARM["gocd"], "artifacts": {"existingClaim": "arts"}}})
    parts = gocd_pod_parts(warm, "a")
    assert parts == (common_pod_parts(warm, "a") + warm_pod_parts(warm) + artifacts_pod_parts(warm))
    assert "shared" not in names(parts.volumes)
    pod = build_gocd_deployment(warm, "a")["spec"]["template"]["spec"]
    assert pod["volumes"] == list(parts.volumes)
    assert pod["containers"][0]["volumeMounts"] == list(parts.server_mounts)
    assert "initContainers" not in pod

    cold = inputs(COLD, primary="a")
    assert gocd_pod_parts(cold, "a") == common_pod_parts(cold, "a") + cold_pod_parts(cold, "a")
    pod = build_gocd_deployment(cold, "a")["spec"]["template"]["spec"]
    assert names(tuple(pod["containers"])) == ["gocd-server", "sync-agent"]
    assert names(tuple(pod["initContainers"])) == ["restore"]
