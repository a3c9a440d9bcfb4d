"""Observation: what the operator sees of a cluster, and the status that follows from it.

Two halves, kept apart so every decision is testable without a network (the rules themselves,
one function per condition, are in :mod:`gocd_ha_operator.rules.conditions`):

* :func:`observe_cluster` (I/O): connects to each side's Postgres as the operator role, to each
  running GoCD server's health endpoint, and to the config-sync source (the Warm standby's
  business-continuity dashboard, or the Cold sync agent over verified HTTPS). Everything has a
  timeout, and an unreachable endpoint is an observation, never an exception.
* :func:`compute_status` (pure): observation + previous status + clock in, new status and the
  conditions that changed out. ``lastTransitionTime`` moves only when a condition's status flips.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from gocd_ha_operator.api import conditions as cond
from gocd_ha_operator.api.constants import (
    GOCD_HTTP_PORT,
    SIDES,
    SYNC_AGENT_PORT,
    Side,
    other_side,
)
from gocd_ha_operator.api.credentials import ClusterCredentials
from gocd_ha_operator.api.spec import GoCDHACluster
from gocd_ha_operator.api.status import (
    ConfigSyncStatus,
    GoCDHAClusterStatus,
    GoCDServerStatus,
    PostgresInstanceStatus,
    SidesStatus,
    SideStatus,
)
from gocd_ha_operator.builders.common import BuildInputs
from gocd_ha_operator.builders.gocd import gocd_replicas
from gocd_ha_operator.controller.reconcile import existing_operator_password
from gocd_ha_operator.controller.tls import ca_file, read_ca_certificate
from gocd_ha_operator.gocd.client import (
    ConfigSyncReading,
    GoCDUnreachableError,
    VerifiedServer,
    check_health,
    config_sync_from_error,
    read_bc_dashboard,
    read_sync_agent_status,
)
from gocd_ha_operator.gocd.token import TokenFileError, parse_token
from gocd_ha_operator.kube.apply import KubeClient
from gocd_ha_operator.kube.endpoints import Endpoint, resolve
from gocd_ha_operator.kube.names import ChildNames
from gocd_ha_operator.postgres.client import (
    InstanceObservation,
    PostgresAuthFailed,
    PostgresClient,
    PostgresError,
    format_lsn,
)
from gocd_ha_operator.rules import promotion as promo
from gocd_ha_operator.rules.conditions import (
    BC_API_EXPOSED,
    ClusterObservation,
    ConditionVerdict,
    GoCDObservation,
    evaluate_conditions,
    replication_status,
)
from gocd_ha_operator.rules.topology import (
    InstanceReading,
    PrimaryVerdict,
    Topology,
    primary_from_instances,
)

__all__ = [
    "BC_API_EXPOSED",
    "ClusterObservation",
    "ConditionVerdict",
    "GoCDObservation",
    "compute_status",
    "evaluate_conditions",
    "event_for",
    "events_for",
    "instance_checked_topology",
    "observe_cluster",
    "verified_topology",
]

#: A sync older than this is stale (three Warm polling intervals, six Cold sync intervals).
CONFIG_SYNC_MAX_AGE_SECONDS: Final = 180.0
ENDPOINT_TIMEOUT_SECONDS: Final = 5.0
#: The operator's default ``--observe-interval``; what the lag rule assumes when not told.
DEFAULT_OBSERVE_INTERVAL_SECONDS: Final = 10.0
#: The reconcile asks the instances who is primary with this bound, so that an instance that is
#: down delays a reconcile by seconds, not by the full observation timeout.
RECONCILE_PROBE_TIMEOUT_SECONDS: Final = 3.0

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RejectedObservation(InstanceObservation):
    """An instance that answered and rejected the operator role's password."""


async def _observe_postgres(
    cluster: GoCDHACluster,
    side: Side,
    password: str,
    overrides: Mapping[str, Endpoint] | None,
    *,
    ca_pem: bytes | None,
    timeout: float = ENDPOINT_TIMEOUT_SECONDS,
) -> InstanceObservation:
    names = ChildNames(cluster.name)
    if ca_pem is None:
        return InstanceObservation(
            endpoint=side,
            reachable=False,
            error=f"no CA certificate to verify Postgres with (Secret {names.server_tls_secret})",
        )
    try:
        client = PostgresClient.for_service(
            cluster.namespace,
            names.postgres_instance_service(side),
            password=password,
            ca_file=str(ca_file(ca_pem)),
            overrides=overrides,
            connect_timeout=timeout,
            statement_timeout=timeout,
        )
    except (ValueError, OSError) as exc:
        return InstanceObservation(endpoint=side, reachable=False, error=str(exc))
    try:
        return await client.observe()
    except PostgresAuthFailed as exc:
        return RejectedObservation(endpoint=str(client.endpoint), reachable=False, error=str(exc))
    except (PostgresError, OSError) as exc:
        # Authentication or query failures (the instance answers but cannot be observed), or a
        # name that does not resolve: either way an observation, not a crash.
        return InstanceObservation(endpoint=str(client.endpoint), reachable=False, error=str(exc))


def _base_url(
    cluster: GoCDHACluster, service: str, port: int, overrides: Any, *, scheme: str = "http"
) -> str:
    endpoint = resolve(cluster.namespace, service, port, overrides)
    return f"{scheme}://{endpoint.host}:{endpoint.port}"


async def _observe_gocd(
    cluster: GoCDHACluster, side: Side, replicas: int, overrides: Mapping[str, Endpoint] | None
) -> GoCDObservation:
    if replicas == 0:
        return GoCDObservation(replicas=0, healthy=None, message="not running (by design)")
    service = ChildNames(cluster.name).gocd_side_service(side)
    result = await check_health(
        _base_url(cluster, service, GOCD_HTTP_PORT, overrides), timeout=ENDPOINT_TIMEOUT_SECONDS
    )
    return GoCDObservation(replicas=replicas, healthy=result.healthy, message=result.message)


async def _observe_config_sync(
    cluster: GoCDHACluster,
    topology: Topology,
    credentials: ClusterCredentials,
    overrides: Mapping[str, Endpoint] | None,
    now: datetime,
    *,
    ca_pem: bytes | None,
) -> ConfigSyncReading | None:
    try:
        token = parse_token(credentials.bc_token)
    except TokenFileError:
        return None
    names = ChildNames(cluster.name)
    if cluster.spec.gocd.effective_standby_mode == "Warm":
        url = _base_url(
            cluster, names.gocd_side_service(topology.standby), GOCD_HTTP_PORT, overrides
        )
        return await read_bc_dashboard(
            url,
            token,
            max_age_seconds=CONFIG_SYNC_MAX_AGE_SECONDS,
            now=now,
            timeout=ENDPOINT_TIMEOUT_SECONDS,
        )
    # Cold: HTTPS, verified against the cluster CA and the side Service's name (§17).
    service = names.gocd_side_service(topology.primary)
    url = _base_url(cluster, service, SYNC_AGENT_PORT, overrides, scheme="https")
    if ca_pem is None:
        missing = GoCDUnreachableError(
            f"no CA certificate to verify the sync agent with (Secret {names.ca_secret}); "
            "the token was not sent"
        )
        return config_sync_from_error("Cold", f"{url}/status", missing)
    return await read_sync_agent_status(
        url,
        token,
        verify=VerifiedServer(ca_pem, f"{service}.{cluster.namespace}.svc"),
        max_age_seconds=CONFIG_SYNC_MAX_AGE_SECONDS,
        now=now,
        timeout=ENDPOINT_TIMEOUT_SECONDS,
    )


async def observe_cluster(
    cluster: GoCDHACluster,
    credentials: ClusterCredentials,
    topology: Topology,
    *,
    now: datetime,
    operator_image: str,
    overrides: Mapping[str, Endpoint] | None = None,
    ca_pem: bytes | None = None,
) -> ClusterObservation:
    """Look at everything at once; the slowest endpoint bounds the time taken. ``ca_pem`` is the
    cluster CA the Postgres connections and the Cold sync agent's HTTPS verify with (without it
    neither is connected to)."""
    inputs = BuildInputs(cluster, topology, credentials, operator_image)
    replicas = {side: gocd_replicas(inputs, side) for side in SIDES}
    pg_a, pg_b, gocd_a, gocd_b, config_sync = await asyncio.gather(
        _observe_postgres(cluster, "a", credentials.operator_password, overrides, ca_pem=ca_pem),
        _observe_postgres(cluster, "b", credentials.operator_password, overrides, ca_pem=ca_pem),
        _observe_gocd(cluster, "a", replicas["a"], overrides),
        _observe_gocd(cluster, "b", replicas["b"], overrides),
        _observe_config_sync(cluster, topology, credentials, overrides, now, ca_pem=ca_pem),
    )
    return ClusterObservation(
        postgres={"a": pg_a, "b": pg_b},
        gocd={"a": gocd_a, "b": gocd_b},
        config_sync=config_sync,
        credentials_rejected=any(isinstance(o, RejectedObservation) for o in (pg_a, pg_b)),
    )


# --- status computation (the rules are in gocd_ha_operator.rules.conditions) ----------------


def _side_status(side: Side, topology: Topology, observation: ClusterObservation) -> SideStatus:
    pg = observation.postgres[side]
    gocd = observation.gocd[side]
    lsn = pg.current_lsn if pg.current_lsn is not None else pg.replayed_lsn
    mode = "stopped" if gocd.replicas == 0 else topology.role(side)
    return SideStatus(
        role=topology.role(side),
        postgres=PostgresInstanceStatus(
            reachable=pg.reachable,
            in_recovery=pg.in_recovery,
            timeline=pg.timeline,
            lsn=format_lsn(lsn) if lsn is not None else None,
            message=pg.error,
        ),
        gocd=GoCDServerStatus(
            replicas=gocd.replicas, healthy=gocd.healthy, mode=mode, message=gocd.message
        ),
    )


def readings_of(postgres: Mapping[Side, InstanceObservation]) -> dict[Side, InstanceReading]:
    return {
        side: InstanceReading(
            reachable=pg.reachable,
            in_recovery=pg.in_recovery,
            timeline=pg.timeline,
            lsn=pg.current_lsn,
        )
        for side, pg in postgres.items()
    }


def _known_timelines(status: GoCDHAClusterStatus) -> dict[Side, int | None]:
    return {
        "a": status.sides.a.postgres.timeline if status.sides.a else None,
        "b": status.sides.b.postgres.timeline if status.sides.b else None,
    }


def verified_topology(
    cluster: GoCDHACluster, postgres: Mapping[Side, InstanceObservation]
) -> tuple[Topology, PrimaryVerdict]:
    """The topology from status, with its primary replaced by the side the instances show as
    primary when they say so conclusively and no promotion is running (a running promotion
    moves the primary itself, step by step)."""
    topology = promo.topology_of(cluster)
    verdict = primary_from_instances(
        readings_of(postgres), known_timelines=_known_timelines(cluster.status)
    )
    if (
        cluster.status.promotion.result == "InProgress"
        or verdict.side is None
        or verdict.side == topology.primary
    ):
        return topology, verdict
    logger.warning(
        "%s/%s: status says side %s is primary, the instances say side %s (%s); following the "
        "instances",
        cluster.namespace,
        cluster.name,
        topology.primary,
        verdict.side,
        verdict.message,
    )
    status = cluster.status.model_copy(
        update={"primary": verdict.side, "standby": other_side(verdict.side)}
    )
    return promo.topology_of(cluster.model_copy(update={"status": status})), verdict


async def instance_checked_topology(
    kube: KubeClient, cluster: GoCDHACluster, overrides: Mapping[str, Endpoint] | None
) -> Topology:
    """The topology a reconcile applies: status, checked against the instances.

    A reconcile runs at operator start, which is exactly when a restored (stale) status would
    bring a former primary back. Both instances are asked (short timeouts, concurrently) with the
    operator credentials from the existing Secret; without that Secret, or when the instances do
    not answer, status decides (and each instance's entrypoint refuses to start as a primary
    when the archive shows a newer timeline).
    """
    password = await asyncio.to_thread(existing_operator_password, kube, cluster)
    if password is None:
        return promo.topology_of(cluster)
    ca_pem = await asyncio.to_thread(read_ca_certificate, kube, cluster)
    timeout = RECONCILE_PROBE_TIMEOUT_SECONDS
    pg_a, pg_b = await asyncio.gather(
        _observe_postgres(cluster, "a", password, overrides, ca_pem=ca_pem, timeout=timeout),
        _observe_postgres(cluster, "b", password, overrides, ca_pem=ca_pem, timeout=timeout),
    )
    topology, _ = verified_topology(cluster, {"a": pg_a, "b": pg_b})
    return topology


def compute_status(
    cluster: GoCDHACluster,
    observation: ClusterObservation,
    topology: Topology,
    *,
    now: datetime,
    observe_interval: float = DEFAULT_OBSERVE_INTERVAL_SECONDS,
) -> tuple[GoCDHAClusterStatus, list[cond.Transition]]:
    """The status this observation implies, and the condition transitions (for Events).

    ``topology`` is what the observation assumed (from status); when the instances show another
    primary, they win (:func:`verified_topology`).
    """
    previous = cluster.status
    checked, _ = verified_topology(cluster, observation.postgres)
    if checked.primary != topology.primary:
        topology = checked
    replication = replication_status(
        observation,
        topology,
        previous.replication,
        failover=cluster.spec.failover,
        observe_interval=observe_interval,
        now=now,
    )
    promotion_running = previous.promotion.result == "InProgress"
    verdicts = evaluate_conditions(
        cluster,
        observation=observation,
        topology=topology,
        replication=replication,
        promotion_running=promotion_running,
        now=now,
    )
    conditions = list(previous.conditions)
    transitions: list[cond.Transition] = []
    for type_, verdict in verdicts.items():
        conditions, transition = cond.set_condition(
            conditions,
            type=type_,
            status=verdict.status,
            reason=verdict.reason,
            message=verdict.message,
            observed_generation=cluster.metadata.generation,
            now=now,
        )
        if transition is not None:
            transitions.append(transition)
    sync = observation.config_sync
    config_sync = ConfigSyncStatus.model_validate(sync) if sync is not None else None
    version = cluster.spec.gocd.version
    status = previous.model_copy(
        update={
            "primary": topology.primary,
            "standby": topology.standby,
            "standby_mode": cluster.spec.gocd.effective_standby_mode,
            "gocd_version": str(version) if version is not None else None,
            "sides": SidesStatus(
                a=_side_status("a", topology, observation),
                b=_side_status("b", topology, observation),
            ),
            "replication": replication,
            "config_sync": config_sync if config_sync is not None else previous.config_sync,
            "conditions": conditions,
        }
    )
    return status, transitions


#: Conditions whose flip to this status is bad news: their Events are Warnings.
WARNING_WHEN: Final[dict[str, str]] = {
    cond.READY: "False",
    cond.PRIMARY_AVAILABLE: "False",
    cond.STANDBY_REPLICATING: "False",
    cond.CONFIG_SYNCED: "False",
    cond.FAILOVER_POSSIBLE: "False",
    cond.DEGRADED: "True",
    BC_API_EXPOSED: "True",
    cond.BACKUP_HEALTHY: "False",
    cond.CERTIFICATE_READY: "False",
}


def event_for(transition: cond.Transition) -> tuple[str, str, str]:
    """(type, reason, message) of the Event announcing a condition transition."""
    new = transition.new
    kind = "Warning" if WARNING_WHEN.get(new.type) == new.status else "Normal"
    before = transition.old_status or "unset"
    message = f"{new.type} {before} -> {new.status}: {new.message}"
    return kind, new.reason, message[:1000]


#: The reason of the one Event that announces a cluster's first observation.
FIRST_OBSERVATION_REASON: Final = "FirstObservation"


def events_for(
    transitions: Sequence[cond.Transition], *, first_observation: bool
) -> list[tuple[str, str, str]]:
    """The Events announcing ``transitions``: one per transition (:func:`event_for`), except at a
    cluster's first observation (``first_observation``: conditions left ``Initializing`` by
    this write), where every condition leaves ``Unknown`` at once. That is one Event,
    ``FirstObservation``, instead of one per condition (issue #16: 7 of the 9 Events a new
    cluster cost): a Warning when any of them is bad news, listing each condition's status and
    reason (``Ready`` first), then ``Ready``'s message; status holds every message.
    ``CertificateReady`` keeps its own Event: a user's invalid certificate is announced by name
    wherever it is first seen (docs/architecture.md §17)."""
    summarised = [t for t in transitions if t.type != cond.CERTIFICATE_READY]
    if not first_observation or len(summarised) < 2:
        return [event_for(t) for t in transitions]
    events = [event_for(t) for t in transitions if t.type == cond.CERTIFICATE_READY]
    bad = any(WARNING_WHEN.get(t.new.type) == t.new.status for t in summarised)
    ready = next((t.new for t in summarised if t.type == cond.READY), None)
    listed = sorted(summarised, key=lambda t: t.type != cond.READY)
    message = "first observation: " + "; ".join(
        f"{t.type} {t.new.status} ({t.new.reason})" for t in listed
    )
    if ready is not None:
        message += f". Ready: {ready.message}"
    kind = "Warning" if bad else "Normal"
    return [(kind, FIRST_OBSERVATION_REASON, message[:1000]), *events]
