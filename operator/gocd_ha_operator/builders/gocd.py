"""GoCD children: the two servers' volumes, Deployments and Services, and the primary Service.

Warm mode is GoCD's own business-continuity design: the standby server runs with
``-Dgo.server.mode=standby -Dbc.primary.url=…`` and pulls config and plugins from the primary,
authenticated by the ``business-continuity-token`` file. Cold mode is for GoCD ≥ 21.3, which
cannot run against a read-only replica: the standby server is not running, a sync agent beside
the primary mirrors its files onto the shared volume, and a server restores that mirror in an init
container when its side becomes primary.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Final

from gocd_ha_operator.api.constants import (
    BC_TOKEN_KEY,
    COMPONENT_GOCD,
    COMPONENT_STORAGE,
    DB_PROPERTIES_KEY,
    ENV_GOCD_JVM_OPTIONS,
    ENV_GOCD_JVM_OPTS,
    GOCD_ADDONS_DIR,
    GOCD_ARTIFACTS_DIR,
    GOCD_CONFIG_DIR,
    GOCD_DATA_DIR,
    GOCD_GID,
    GOCD_HEALTH_PATH,
    GOCD_HOME_DIR,
    GOCD_HTTP_PORT,
    GOCD_MIRROR_SUBDIR,
    GOCD_UID,
    LABEL_SIDE,
    NO_SIDE,
    RECOVERY_MARKER,
    SHARED_MOUNT,
    SYNC_AGENT_PORT,
    SYNC_TOKEN_DIR,
    Side,
)
from gocd_ha_operator.builders.common import (
    HEADLESS,
    HELPER_RESOURCES,
    BuildInputs,
    claim_spec,
    container_security_context,
    metadata,
    pod_security_context,
    resources,
    service_host,
)
from gocd_ha_operator.builders.postgres import (
    BOOTSTRAP_SIDE,
    SECRET_FILE_MODE,
    recovering,
    shared_claim_name,
)
from gocd_ha_operator.builders.tls import (
    ca_mount,
    ca_volume,
    sync_agent_tls_arguments,
    sync_agent_tls_mount,
    sync_agent_tls_volume,
)
from gocd_ha_operator.kube.labels import selector_labels

#: How often the Cold-mode sync agent mirrors the primary's files.
SYNC_INTERVAL_SECONDS: Final = 30
MIRROR_DIR: Final = f"{SHARED_MOUNT}/{GOCD_MIRROR_SUBDIR}"
#: GoCD >= 20.9 starts in maintenance mode with this system property.
MAINTENANCE_MODE_OPTION: Final = "-Dgocd.server.start.in.maintenance.mode"


def standby_jvm_options(inputs: BuildInputs) -> list[str]:
    """The options that make a Warm standby: standby mode and where its primary is (no ``/go``)."""
    primary_service = inputs.names.gocd_side_service(inputs.topology.primary)
    url = f"http://{service_host(inputs, primary_service)}:{GOCD_HTTP_PORT}"
    return ["-Dgo.server.mode=standby", f"-Dbc.primary.url={url}"]


def gocd_jvm_options(inputs: BuildInputs, side: Side) -> str:
    """The JVM options string of a server. The image ``eval``s it, so every option is quoted."""
    gocd = inputs.cluster.spec.gocd
    options = list(gocd.jvm_options)
    if gocd.effective_standby_mode == "Warm" and inputs.topology.role(side) == "standby":
        options += standby_jvm_options(inputs)
    if side in inputs.topology.maintenance:
        options.append(f"{MAINTENANCE_MODE_OPTION}=true")
    return shlex.join(options)


def gocd_replicas(inputs: BuildInputs, side: Side) -> int:
    """One server per running side, except a Cold standby, which is stopped by design."""
    topology = inputs.topology
    if not topology.running(side):
        return 0
    if (
        topology.role(side) == "standby"
        and inputs.cluster.spec.gocd.effective_standby_mode == "Cold"
    ):
        return 0
    return 1


def _token_volume(inputs: BuildInputs) -> dict[str, Any]:
    ref = inputs.cluster.spec.gocd.business_continuity.token_secret_ref
    secret, key = (ref.name, ref.key) if ref else (inputs.names.bc_token_secret, BC_TOKEN_KEY)
    return {
        "name": "bc-token",
        "secret": {
            "secretName": secret,
            "items": [{"key": key, "path": BC_TOKEN_KEY}],
            "defaultMode": SECRET_FILE_MODE,
        },
    }


def _http_probe(period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": GOCD_HEALTH_PATH, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _helper_container(
    inputs: BuildInputs, name: str, args: list[str], mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    """A container running one of this project's own commands from the operator image."""
    return {
        "name": name,
        "image": inputs.operator_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["gocd-ha-operator", *args],
        "resources": HELPER_RESOURCES,
        "securityContext": container_security_context(read_only_root=True),
        "volumeMounts": mounts,
    }


@dataclass(frozen=True)
class PodParts:
    """What one concern adds to a GoCD server pod; parts are concatenated in a fixed order.

    The Deployment is a common part plus a Warm or a Cold part (plus the optional artifacts
    volume), each a small function that can be read and tested for what it adds alone.
    """

    server_mounts: tuple[dict[str, Any], ...] = ()
    volumes: tuple[dict[str, Any], ...] = ()
    init_containers: tuple[dict[str, Any], ...] = ()
    sidecars: tuple[dict[str, Any], ...] = ()

    def __add__(self, other: PodParts) -> PodParts:
        return PodParts(
            server_mounts=self.server_mounts + other.server_mounts,
            volumes=self.volumes + other.volumes,
            init_containers=self.init_containers + other.init_containers,
            sidecars=self.sidecars + other.sidecars,
        )


def _godata_mount() -> dict[str, Any]:
    """The server's data volume at /godata (the helpers mount it too); a fresh dict each time,
    as callers may change the manifests they are given."""
    return {"name": "godata", "mountPath": GOCD_DATA_DIR, "subPath": "godata"}


def common_pod_parts(inputs: BuildInputs, side: Side) -> PodParts:
    """Both modes: /godata and the home directory on the side's claim, the generated
    ``db.properties`` pointing at the side's Postgres, and the token volume (the Warm server
    reads it, the Cold sync agent authenticates with it)."""
    names = inputs.names
    return PodParts(
        server_mounts=(
            _godata_mount(),
            {"name": "godata", "mountPath": GOCD_HOME_DIR, "subPath": "homego"},
            {
                "name": "db-properties",
                "mountPath": f"{GOCD_CONFIG_DIR}/{DB_PROPERTIES_KEY}",
                "subPath": DB_PROPERTIES_KEY,
                "readOnly": True,
            },
            # db.properties verifies Postgres with the cluster CA (docs/architecture.md §17).
            ca_mount(),
        ),
        volumes=(
            {"name": "godata", "persistentVolumeClaim": {"claimName": names.gocd_pvc(side)}},
            ca_volume(inputs),
            {
                "name": "db-properties",
                "secret": {
                    "secretName": names.gocd_db_properties_secret(side),
                    "defaultMode": SECRET_FILE_MODE,
                },
            },
            _token_volume(inputs),
        ),
    )


def warm_pod_parts(inputs: BuildInputs) -> PodParts:
    """Warm: the token file in GoCD's config directory, and for GoCD ≤ 20.5 an init container
    that installs the verified add-on jar (with a scratch volume to download it to)."""
    token_mount = {
        "name": "bc-token",
        "mountPath": f"{GOCD_CONFIG_DIR}/{BC_TOKEN_KEY}",
        "subPath": BC_TOKEN_KEY,
        "readOnly": True,
    }
    addon = inputs.cluster.spec.gocd.business_continuity.addon
    if addon is None:
        return PodParts(server_mounts=(token_mount,))
    install = _helper_container(
        inputs,
        "install-addon",
        [
            "install-addon",
            "--url",
            addon.url,
            "--sha256",
            addon.sha256,
            "--target",
            GOCD_ADDONS_DIR,
        ],
        [_godata_mount(), {"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
    )
    return PodParts(
        server_mounts=(token_mount,),
        volumes=({"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},),
        init_containers=(install,),
    )


def cold_pod_parts(inputs: BuildInputs, side: Side) -> PodParts:
    """Cold: the shared volume; on the primary side, an init container restoring the mirror
    (a promoted server starts from the old primary's files) and the sync agent that keeps the
    mirror current and serves its ``/status`` over HTTPS (its certificate is mounted in that
    container only). A Cold standby runs no pod, so it needs neither."""
    shared = {"name": "shared", "persistentVolumeClaim": {"claimName": shared_claim_name(inputs)}}
    if inputs.topology.role(side) != "primary":
        return PodParts(volumes=(shared,))
    restore_args = ["restore", "--source", MIRROR_DIR, "--target", GOCD_DATA_DIR, "--side", side]
    if side == BOOTSTRAP_SIDE and recovering(inputs):
        # The first primary's entrypoint is putting the backup's files in the mirror.
        restore_args += ["--wait-for", RECOVERY_MARKER]
    restore = _helper_container(
        inputs,
        "restore",
        restore_args,
        [_godata_mount(), {"name": "shared", "mountPath": SHARED_MOUNT, "readOnly": True}],
    )
    agent = _helper_container(
        inputs,
        "sync-agent",
        [
            "sync-agent",
            "--source",
            GOCD_DATA_DIR,
            "--target",
            MIRROR_DIR,
            "--token-file",
            f"{SYNC_TOKEN_DIR}/{BC_TOKEN_KEY}",
            "--listen",
            f"0.0.0.0:{SYNC_AGENT_PORT}",
            "--interval",
            str(SYNC_INTERVAL_SECONDS),
            "--side",
            side,
            *sync_agent_tls_arguments(),
        ],
        [
            {**_godata_mount(), "readOnly": True},
            {"name": "shared", "mountPath": SHARED_MOUNT},
            {"name": "bc-token", "mountPath": SYNC_TOKEN_DIR, "readOnly": True},
            sync_agent_tls_mount(),
        ],
    )
    agent["ports"] = [{"name": "sync-status", "containerPort": SYNC_AGENT_PORT, "protocol": "TCP"}]
    agent["readinessProbe"] = {
        "tcpSocket": {"port": "sync-status"},
        "periodSeconds": 10,
        "failureThreshold": 3,
    }
    return PodParts(
        volumes=(shared, sync_agent_tls_volume(inputs, SECRET_FILE_MODE)),
        init_containers=(restore,),
        sidecars=(agent,),
    )


def artifacts_pod_parts(inputs: BuildInputs) -> PodParts:
    """The optional ReadWriteMany artifacts volume, in either mode: an existing claim or ours."""
    artifacts = inputs.cluster.spec.gocd.artifacts
    if artifacts is None:
        return PodParts()
    claim = artifacts.existing_claim or inputs.names.artifacts_pvc
    return PodParts(
        server_mounts=({"name": "artifacts", "mountPath": GOCD_ARTIFACTS_DIR},),
        volumes=({"name": "artifacts", "persistentVolumeClaim": {"claimName": claim}},),
    )


def gocd_pod_parts(inputs: BuildInputs, side: Side) -> PodParts:
    """Common, then the mode's part, then artifacts: the order the pod spec lists them in."""
    if inputs.cluster.spec.gocd.effective_standby_mode == "Warm":
        mode_parts = warm_pod_parts(inputs)
    else:
        mode_parts = cold_pod_parts(inputs, side)
    return common_pod_parts(inputs, side) + mode_parts + artifacts_pod_parts(inputs)


def _server_container(
    inputs: BuildInputs, side: Side, mounts: tuple[dict[str, Any], ...]
) -> dict[str, Any]:
    gocd = inputs.cluster.spec.gocd
    jvm = gocd_jvm_options(inputs, side)
    return {
        "name": "gocd-server",
        "image": gocd.image,
        "imagePullPolicy": "IfNotPresent",
        # The image reads GOCD_SERVER_JVM_OPTS; GoCD's business-continuity docs name
        # GOCD_SERVER_JVM_OPTIONS. Both carry the same value so either reading is right.
        "env": [
            {"name": ENV_GOCD_JVM_OPTS, "value": jvm},
            {"name": ENV_GOCD_JVM_OPTIONS, "value": jvm},
        ],
        "ports": [{"name": "http", "containerPort": GOCD_HTTP_PORT, "protocol": "TCP"}],
        # GoCD migrates its database on first start: allow it ten minutes before liveness counts.
        "startupProbe": _http_probe(period=10, failures=60),
        "readinessProbe": _http_probe(period=10, failures=3),
        "livenessProbe": _http_probe(period=15, failures=10),
        "resources": resources(gocd.resources),
        # The image rewrites its wrapper configuration under /go-server at every start, so its
        # root filesystem cannot be read-only.
        "securityContext": container_security_context(read_only_root=False),
        "volumeMounts": [dict(mount) for mount in mounts],
    }


def build_gocd_deployment(inputs: BuildInputs, side: Side) -> dict[str, Any]:
    """The Deployment of one side's server: :func:`gocd_pod_parts` around the server container."""
    name = inputs.names.gocd_deployment(side)
    role = inputs.topology.role(side)
    parts = gocd_pod_parts(inputs, side)
    pod_meta = metadata(inputs, name, COMPONENT_GOCD, side=side)
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 120,
        "securityContext": pod_security_context(GOCD_UID, GOCD_GID),
        "containers": [_server_container(inputs, side, parts.server_mounts), *parts.sidecars],
        "volumes": list(parts.volumes),
    }
    if parts.init_containers:
        pod_spec["initContainers"] = list(parts.init_containers)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(inputs, name, COMPONENT_GOCD, side=side, role=role),
        "spec": {
            "replicas": gocd_replicas(inputs, side),
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector_labels(inputs.cluster.name, COMPONENT_GOCD, side)},
            "template": {"metadata": {"labels": pod_meta["labels"]}, "spec": pod_spec},
        },
    }


def build_gocd_pvc(inputs: BuildInputs, side: Side) -> dict[str, Any]:
    storage = inputs.cluster.spec.gocd.storage
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(inputs, inputs.names.gocd_pvc(side), COMPONENT_GOCD, side=side),
        "spec": claim_spec(storage.size, storage.storage_class_name, "ReadWriteOnce"),
    }


def build_artifacts_pvc(inputs: BuildInputs) -> dict[str, Any] | None:
    artifacts = inputs.cluster.spec.gocd.artifacts
    if artifacts is None or artifacts.existing_claim is not None or artifacts.size is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(inputs, inputs.names.artifacts_pvc, COMPONENT_STORAGE),
        "spec": claim_spec(artifacts.size, artifacts.storage_class_name, "ReadWriteMany"),
    }


def build_gocd_side_service(inputs: BuildInputs, side: Side) -> dict[str, Any]:
    """One Service per server: the Warm standby's ``bc.primary.url`` and the operator's health
    checks go through it, so it also publishes a server that is running but not ready. Headless,
    like the Postgres instance Services: its pod never moves, and its ports are the containers'."""
    ports = [{"name": "http", "port": GOCD_HTTP_PORT, "targetPort": "http", "protocol": "TCP"}]
    if inputs.cluster.spec.gocd.effective_standby_mode == "Cold":
        ports.append(
            {
                "name": "sync-status",
                "port": SYNC_AGENT_PORT,
                "targetPort": "sync-status",
                "protocol": "TCP",
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(
            inputs, inputs.names.gocd_side_service(side), COMPONENT_GOCD, side=side
        ),
        "spec": {
            "type": "ClusterIP",
            "clusterIP": HEADLESS,
            "selector": selector_labels(inputs.cluster.name, COMPONENT_GOCD, side),
            "publishNotReadyAddresses": True,
            "ports": ports,
        },
    }


def build_gocd_service(inputs: BuildInputs) -> dict[str, Any]:
    """``<name>-gocd``: the stable address of the primary server for users and agents. Its IP never
    changes; a promotion only moves its selector. While the primary is fenced it selects nothing."""
    topology = inputs.topology
    service = inputs.cluster.spec.gocd.service
    selector = selector_labels(inputs.cluster.name, COMPONENT_GOCD)
    selector[LABEL_SIDE] = topology.primary if topology.running(topology.primary) else NO_SIDE
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(
            inputs,
            inputs.names.gocd_service,
            COMPONENT_GOCD,
            role="primary",
            annotations=service.annotations,
        ),
        "spec": {
            "type": service.type,
            "selector": selector,
            "ports": [
                {"name": "http", "port": GOCD_HTTP_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }
