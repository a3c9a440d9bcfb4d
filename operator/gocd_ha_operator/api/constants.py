"""Names, keys, ports and paths that other components depend on.

Everything here is part of the project's contract with its users (labels they select on,
annotations they write), with the container images (paths and ports the images use) and between
the operator and the scripts it ships (environment variable names). Changing a value here is a
breaking change; that is why they live in one place and are ``Final``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final, Literal

# --- The custom resource -------------------------------------------------------------------------
GROUP: Final = "gocdha.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "GoCDHACluster"
PLURAL: Final = "gocdhaclusters"
SINGULAR: Final = "gocdhacluster"
SHORT_NAME: Final = "gocdha"
CATEGORY: Final = "gocd"
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

#: The operator's own name, used as field manager and as ``app.kubernetes.io/managed-by``.
OPERATOR_NAME: Final = "gocd-ha-operator"

# --- Sides and roles ----------------------------------------------------------------------------
Side = Literal["a", "b"]
Role = Literal["primary", "standby"]
SIDES: Final[tuple[Side, Side]] = ("a", "b")
ROLE_PRIMARY: Final = "primary"
ROLE_STANDBY: Final = "standby"


def other_side(side: Side) -> Side:
    """The peer of ``side``: the two halves of a cluster are always ``a`` and ``b``."""
    return "b" if side == "a" else "a"


# --- Labels (owner-independent; applied by ``labels.py``) ----------------------------------------
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
LABEL_SIDE: Final = f"{GROUP}/side"
LABEL_ROLE: Final = f"{GROUP}/role"

#: ``app.kubernetes.io/name`` of every child: the application the children make up.
APP_NAME: Final = "gocd"
PART_OF: Final = "gocd-ha"

COMPONENT_POSTGRES: Final = "postgres"
COMPONENT_GOCD: Final = "gocd-server"
COMPONENT_CREDENTIALS: Final = "credentials"
COMPONENT_STORAGE: Final = "shared-storage"
COMPONENT_BACKUP: Final = "backup"

#: Selector value that matches no side: a role Service whose role is fenced selects nothing.
NO_SIDE: Final = "none"

# --- Annotations ----------------------------------------------------------------------------------
ANNOTATION_PROMOTE: Final = f"{GROUP}/promote"
ANNOTATION_PROMOTE_FORCE: Final = f"{GROUP}/promote-force"
#: The spec the children were last built from (written by a successful reconcile, compact JSON).
ANNOTATION_RECONCILED_SPEC: Final = f"{GROUP}/reconciled-spec"
FINALIZER: Final = f"{GROUP}/finalizer"

# --- Postgres ------------------------------------------------------------------------------------
POSTGRES_PORT: Final = 5432
POSTGRES_UID_DEBIAN: Final = 999
POSTGRES_UID_ALPINE: Final = 70
SUPERUSER_NAME: Final = "postgres"
REPLICATION_USER: Final = "gocdha_replication"
OPERATOR_DB_USER: Final = "gocdha_operator"
GOCD_DB_USER: Final = "gocd"
#: A physical replication slot per standby side: the primary keeps ``gocdha_<standby side>``.
SLOT_PREFIX: Final = "gocdha_"

# Paths inside the Postgres container.
PG_DATA_MOUNT: Final = "/var/lib/postgresql/data"
PGDATA: Final = "/var/lib/postgresql/data/pgdata"
PG_CONFIG_DIR: Final = "/opt/gocdha/config"
PG_SECRETS_DIR: Final = "/opt/gocdha/secrets"
PG_SOCKET_DIR: Final = "/var/run/postgresql"
SHARED_MOUNT: Final = "/shared"
#: Where the Postgres and guard containers mount the cluster's server certificate Secret
#: (``tls.crt``, ``tls.key``, ``ca.crt``); the entrypoint and the guard copy it into
#: ``<socket dir>/tls`` with the modes Postgres demands (docs/architecture.md §17).
PG_TLS_SECRET_DIR: Final = "/opt/gocdha/tls"
#: Where a GoCD pod (and a backup Job) mounts the cluster CA certificate, to verify Postgres.
TLS_CA_DIR: Final = "/opt/gocdha/ca"
#: Keys of the server certificate Secret (the names cert-manager uses) and of the CA Secret.
TLS_CERT_KEY: Final = "tls.crt"
TLS_PRIVATE_KEY: Final = "tls.key"
TLS_CA_CERT_KEY: Final = "ca.crt"
TLS_CA_PRIVATE_KEY: Final = "ca.key"
WAL_ARCHIVE_SUBDIR: Final = "wal"
GOCD_MIRROR_SUBDIR: Final = "gocd"

# Keys of the ``<name>-postgres`` ConfigMap.
CM_POSTGRESQL_CONF: Final = "postgresql.conf"
CM_PG_HBA_CONF: Final = "pg_hba.conf"
CM_ENTRYPOINT: Final = "entrypoint.sh"
CM_ARCHIVE_WAL: Final = "archive-wal.sh"
CM_RESTORE_WAL: Final = "restore-wal.sh"
CM_CLEANUP_WAL: Final = "cleanup-wal.sh"
CM_BACKUP: Final = "backup.sh"
CM_RECOVER: Final = "recover.sh"

# Backups (docs/backup-and-recovery.md).
#: ``gocdha.io/backup=<token>``: take a backup now, once per value.
ANNOTATION_BACKUP: Final = f"{GROUP}/backup"
#: Where a backup Job mounts the backup volume, and a recovering primary mounts the source's.
BACKUP_MOUNT: Final = "/backup"
#: Where a recovering primary mounts the source cluster's shared volume (read-only).
RECOVERY_ARCHIVE_MOUNT: Final = "/recovery-source"
#: Written on the new cluster's shared volume by a primary that bootstrapped from a backup once
#: the backup's GoCD files are in place; the GoCD server's restore init container waits for it.
RECOVERY_MARKER: Final = f"{SHARED_MOUNT}/.gocdha-recovered-from"
#: Labels of a backup Job: its backup's name and what started it.
LABEL_BACKUP: Final = f"{GROUP}/backup"
LABEL_BACKUP_TRIGGER: Final = f"{GROUP}/backup-trigger"


def cm_role_key(side: Side) -> str:
    """ConfigMap key holding the role of ``side``; read at container start via ``GOCDHA_ROLE``."""
    return f"role-{side}"


# Environment variables of the instance entrypoint (documented in docs/postgres-instances.md).
ENV_SIDE: Final = "GOCDHA_SIDE"
ENV_ROLE: Final = "GOCDHA_ROLE"
ENV_PEER_HOST: Final = "GOCDHA_PEER_HOST"
ENV_PEER_PORT: Final = "GOCDHA_PEER_PORT"
ENV_PORT: Final = "GOCDHA_PORT"
ENV_ARCHIVE_DIR: Final = "GOCDHA_ARCHIVE_DIR"
ENV_CONFIG_DIR: Final = "GOCDHA_CONFIG_DIR"
ENV_SCRIPTS_DIR: Final = "GOCDHA_SCRIPTS_DIR"
ENV_SOCKET_DIR: Final = "GOCDHA_SOCKET_DIR"
ENV_PG_BINDIR: Final = "GOCDHA_PG_BINDIR"
ENV_DATABASE: Final = "GOCDHA_DATABASE"
ENV_SUPERUSER_PASSWORD_FILE: Final = "GOCDHA_SUPERUSER_PASSWORD_FILE"
ENV_REPLICATION_PASSWORD_FILE: Final = "GOCDHA_REPLICATION_PASSWORD_FILE"
ENV_OPERATOR_PASSWORD_FILE: Final = "GOCDHA_OPERATOR_PASSWORD_FILE"
ENV_GOCD_PASSWORD_FILE: Final = "GOCDHA_GOCD_PASSWORD_FILE"
#: The mounted server certificate Secret (tls.crt, tls.key, ca.crt) the instance serves TLS from.
ENV_TLS_SECRET_DIR: Final = "GOCDHA_TLS_SECRET_DIR"
#: Optional numeric address of the peer: libpq connects there (``hostaddr``) and still verifies
#: the certificate against ``GOCDHA_PEER_HOST`` (the Service name).
ENV_PEER_HOSTADDR: Final = "GOCDHA_PEER_HOSTADDR"

# --- GoCD server (facts of the official image, see docs/gocd-standby-modes.md) ------------------
GOCD_HTTP_PORT: Final = 8153
GOCD_UID: Final = 1000
GOCD_GID: Final = 0
GOCD_DATA_DIR: Final = "/godata"
GOCD_CONFIG_DIR: Final = "/godata/config"
GOCD_HOME_DIR: Final = "/home/go"
GOCD_ADDONS_DIR: Final = "/godata/addons"
GOCD_ARTIFACTS_DIR: Final = "/godata/artifacts"
GOCD_HEALTH_PATH: Final = "/go/api/v1/health"
GOCD_BC_DASHBOARD_PATH: Final = "/go/add-on/business-continuity/admin/dashboard.json"
ENV_GOCD_JVM_OPTS: Final = "GOCD_SERVER_JVM_OPTS"
ENV_GOCD_JVM_OPTIONS: Final = "GOCD_SERVER_JVM_OPTIONS"
DB_PROPERTIES_KEY: Final = "db.properties"
BC_TOKEN_KEY: Final = "business-continuity-token"
BC_TOKEN_USER: Final = "gocdha"
#: Cold mode: the sync agent's status port on the primary GoCD pod.
SYNC_AGENT_PORT: Final = 8155
SYNC_TOKEN_DIR: Final = "/var/run/gocdha/token"
#: Cold mode: where the sync agent mounts its serving certificate (``tls.crt``, ``tls.key`` of
#: ``<name>-sync-agent-tls``, docs/architecture.md §17); ``/status`` is served over HTTPS only.
SYNC_TLS_DIR: Final = "/var/run/gocdha/sync-agent-tls"

# --- Operator runtime ----------------------------------------------------------------------------
ENV_ENDPOINTS: Final = "GOCDHA_ENDPOINTS"
#: Outside a cluster (the local kubelet), the directory standing for a container's
#: ``/var/run/secrets/kubernetes.io/serviceaccount`` (token, namespace, ca.crt); unset in a pod.
ENV_SERVICE_ACCOUNT_DIR: Final = "GOCDHA_SERVICEACCOUNT_DIR"
ENV_OPERATOR_IMAGE: Final = "GOCDHA_OPERATOR_IMAGE"
DEFAULT_OPERATOR_IMAGE: Final = "ghcr.io/gocd-ha-operator/gocd-ha-operator:0.1.0"
#: The namespace the operator runs in: the Postgres NetworkPolicy admits the operator from there
#: only. The chart sets it from ``.Release.Namespace``, the kustomize overlays from the Namespace.
ENV_OPERATOR_NAMESPACE: Final = "GOCDHA_OPERATOR_NAMESPACE"
DEFAULT_OPERATOR_NAMESPACE: Final = "gocd-ha-operator"
#: A label of the operator pod, fixed in the chart and the manifests (never derived from a
#: ``nameOverride``): with the namespace it is what the Postgres NetworkPolicy admits.
OPERATOR_POD_LABEL: Final = f"{GROUP}/operator"
OPERATOR_POD_LABEL_VALUE: Final = "true"
#: The label every namespace carries with its own name (Kubernetes ≥ 1.21, immutable).
NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"


def operator_namespace_from(environ: Mapping[str, str]) -> str:
    """The operator's namespace from ``GOCDHA_OPERATOR_NAMESPACE`` (default: gocd-ha-operator).

    Raises ``ValueError`` naming the variable when it is not a namespace name.
    """
    value = environ.get(ENV_OPERATOR_NAMESPACE) or DEFAULT_OPERATOR_NAMESPACE
    if len(value) > 63 or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", value):
        raise ValueError(
            f"{ENV_OPERATOR_NAMESPACE}: {value[:70]!r} is not a namespace name "
            "(a DNS-1123 label of at most 63 characters)"
        )
    return value


# --- Leases (docs/operator.md, "What fences a primary") -----------------------------------------
#: ``metadata.annotations`` key of the primary Lease: the timeline of the holder's Postgres.
ANNOTATION_LEASE_TIMELINE: Final = f"{GROUP}/timeline"
#: Identity of the operator's leader-election Lease (in the operator's namespace).
OPERATOR_LEASE_NAME: Final = OPERATOR_NAME
#: File in ``GOCDHA_SOCKET_DIR`` where the instance guard writes the wall-clock time (Unix
#: seconds) until which its side may run as a primary; the entrypoint starts a primary only
#: while it is in the future.
LEASE_GRANT_FILE: Final = "gocdha-lease-grant"
#: The entrypoint waits for a lease grant only when this names the grant file (set in pods that
#: run the guard; a bare entrypoint run, e.g. the local kubelet before sidecars, does not wait).
ENV_LEASE_GRANT_FILE: Final = "GOCDHA_LEASE_GRANT_FILE"
ENV_WAIT_LEASE_SECONDS: Final = "GOCDHA_WAIT_LEASE_SECONDS"
#: Keys of the ``<name>-postgres`` ConfigMap holding the Lease timings the guards read (lease
#: duration, renew deadline, retry period): a timing edit restarts no Postgres pod.
CM_LEASE_TIMING_KEYS: Final = (
    "lease-duration-seconds",
    "renew-deadline-seconds",
    "retry-period-seconds",
)
#: Seconds before its renew deadline at which the guard stops Postgres, so that the fast
#: shutdown has ended every session *before* the deadline.
FENCE_LEAD_SECONDS: Final = 1.0
#: Extra seconds the operator waits after a Lease's expiry before promoting (clock-rate drift
#: between the guard's and the operator's clocks, observation latency).
LEASE_EXPIRY_MARGIN_SECONDS: Final = 2.0


# --- Configuration changes (docs/architecture.md §16) --------------------------------------------
#: File in ``GOCDHA_SOCKET_DIR`` holding the ConfigMap's ``postgresql.conf`` as the instance last
#: loaded it: the entrypoint writes it at every start, the instance guard rewrites it (and sends
#: the postmaster SIGHUP) when the ConfigMap changes, so a reloadable change never waits for the
#: kubelet to refresh a ConfigMap volume. The data dir's ``gocdha.conf`` includes it.
PG_SETTINGS_FILE: Final = "gocdha-settings.conf"
#: A custom setting at the end of the rendered ``postgresql.conf``: a hash of everything above it.
#: ``current_setting()`` on an instance says which configuration it has loaded.
PG_CONFIG_REVISION_SETTING: Final = "gocdha.config_revision"
#: The settings whose value a hot standby must have at least as high as its primary, or
#: PostgreSQL refuses to run it ("recovery aborted because of insufficient parameter settings").
#: Lowering one restarts the primary first (docs/architecture.md §16); the entrypoint's list
#: (``entrypoint.sh``, ``hot_standby_floor``) is the same, checked by a unit test.
HOT_STANDBY_SENSITIVE_SETTINGS: Final = (
    "max_connections",
    "max_locks_per_transaction",
    "max_prepared_transactions",
    "max_wal_senders",
    "max_worker_processes",
)
#: A custom setting the entrypoint writes into a standby's own settings when it had to start it
#: with some of :data:`HOT_STANDBY_SENSITIVE_SETTINGS` above their configured value (the value
#: its control file records from the primary): their names, comma-separated. Such a standby
#: needs a restart once the primary runs the lower value.
PG_RAISED_SETTINGS_SETTING: Final = "gocdha.raised_settings"
#: Pod-template annotation of a Postgres StatefulSet: the configuration revision the pod was
#: (re)started for. Set by a controlled rolling restart, one side at a time.
ANNOTATION_RESTART_REVISION: Final = f"{GROUP}/restart-revision"
