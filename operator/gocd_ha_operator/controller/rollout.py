"""Configuration changes in the supervisor's loop: the I/O around :mod:`rules.rollout`.

Each observation, the supervisor hands what it saw to :func:`apply_rollout` inside its status
change: the pure rule decides ``status.configuration`` and the condition ``ConfigurationApplied``
(through the one condition helper), names the Events of the steps, and may ask for the roll's
switchover, which the supervisor starts like any promotion request (exactly once, recorded in
status). When the rule moved a side's pin, :func:`apply_pins` applies the children afterwards —
the only way a Postgres StatefulSet's image or restart revision changes (docs/architecture.md
§16).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gocd_ha_operator.api import conditions as cond
from gocd_ha_operator.api.constants import HOT_STANDBY_SENSITIVE_SETTINGS, SIDES, Side
from gocd_ha_operator.api.spec import GoCDHACluster
from gocd_ha_operator.api.status import GoCDHAClusterStatus
from gocd_ha_operator.controller.config import ClusterState, OperatorConfig
from gocd_ha_operator.controller.reconcile import live_pins, reconcile_children
from gocd_ha_operator.postgres import config as pgconfig
from gocd_ha_operator.rules import promotion as promo
from gocd_ha_operator.rules import rollout as rules
from gocd_ha_operator.rules.conditions import ClusterObservation
from gocd_ha_operator.rules.topology import Topology


@dataclass
class RolloutOutcome:
    """What the supervisor does after its status write."""

    switchover: promo.PromotionRequest | None = None
    pins_changed: bool = False
    events: list[tuple[str, str, str]] = field(default_factory=list)


async def read_live_pins(
    config: OperatorConfig, cluster: GoCDHACluster, state: ClusterState
) -> dict[Side, rules.Pin]:
    """The live StatefulSets' pins, read only while status does not record both sides' — and
    not at all right after the reconcile that created them: it handed over what it sent
    (``state.created_pins``, used once)."""
    if len(rules.status_pins(cluster.status.configuration)) == len(SIDES):
        return {}
    created, state.created_pins = state.created_pins, None
    if created is not None:
        return dict(created)
    return await asyncio.to_thread(live_pins, config.kube, cluster)


def wanted_revision(cluster: GoCDHACluster) -> str:
    """The configuration revision spec.postgres renders (what the instances must load)."""
    spec = cluster.spec.postgres
    conf = pgconfig.render_postgresql_conf(parameters=spec.parameters, synchronous=spec.synchronous)
    revision = pgconfig.loaded_revision(conf)
    assert revision is not None
    return revision


def wanted_settings(cluster: GoCDHACluster) -> dict[str, int]:
    """The hot-standby-sensitive settings spec.postgres.parameters sets (the model checked them:
    plain integers)."""
    parameters = {name.lower(): value for name, value in cluster.spec.postgres.parameters.items()}
    wanted: dict[str, int] = {}
    for name in HOT_STANDBY_SENSITIVE_SETTINGS:
        value = parameters.get(name)
        if value is not None and value.strip().isdigit():
            wanted[name] = int(value.strip())
    return wanted


def instance_views(observation: ClusterObservation) -> dict[Side, rules.InstanceView]:
    views: dict[Side, rules.InstanceView] = {}
    for side in SIDES:
        pg = observation.postgres[side]
        reading = pg.config
        views[side] = rules.InstanceView(
            reachable=pg.reachable,
            in_recovery=pg.in_recovery,
            streaming=pg.wal_receiver_status == "streaming",
            revision=reading.revision if reading else None,
            pending_restart=reading.pending_restart if reading else (),
            server_version=reading.server_version if reading else None,
            started_at=reading.started_at if reading else None,
            settings={name: value for name, value, _ in reading.sensitive} if reading else {},
            defaults={name: default for name, _, default in reading.sensitive} if reading else {},
            raised=reading.raised if reading else (),
            lsn=pg.replayed_lsn if pg.in_recovery else pg.current_lsn,
        )
    return views


def apply_rollout(
    cluster: GoCDHACluster,
    status: GoCDHAClusterStatus,
    *,
    observation: ClusterObservation,
    topology: Topology,
    live: Mapping[Side, rules.Pin],
    generation: int | None,
    now: datetime,
    transitions: list[cond.Transition],
) -> tuple[GoCDHAClusterStatus, RolloutOutcome]:
    """``status`` with ``configuration`` and ``ConfigurationApplied`` decided from the
    observation; the switchover to request and whether the children must be applied."""
    spec_image = cluster.spec.postgres.image
    decision = rules.decide(
        rules.RolloutInput(
            want_image=spec_image,
            want_revision=wanted_revision(cluster),
            pins=rules.effective_pins(status.configuration, live, spec_image, status.promotion),
            instances=instance_views(observation),
            primary=topology.primary,
            stopped=topology.stopped,
            promotion=status.promotion,
            previous=status.configuration,
            now=now,
            want_settings=wanted_settings(cluster),
        )
    )
    conditions, transition = cond.set_condition(
        status.conditions,
        type=rules.CONFIGURATION_APPLIED,
        status=decision.condition_status,
        reason=decision.reason,
        message=decision.message,
        observed_generation=generation,
        now=now,
    )
    if transition is not None:
        transitions.append(transition)
    updated = status.model_copy(
        update={"configuration": decision.configuration, "conditions": conditions}
    )
    return updated, RolloutOutcome(
        switchover=decision.switchover,
        pins_changed=decision.pins_changed,
        events=decision.events,
    )


async def apply_pins(
    config: OperatorConfig, state: ClusterState, body: dict[str, Any], cluster: GoCDHACluster
) -> None:
    """Apply every child with the pins now in status (the same call a promotion step makes)."""
    async with state.apply_lock:
        await asyncio.to_thread(
            reconcile_children,
            config.kube,
            body,
            cluster,
            operator_image=config.operator_image,
            topology=promo.topology_of(cluster),
            operator_namespace=config.operator_namespace,
        )
