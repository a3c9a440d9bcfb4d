"""The supervisor's status writes, and what it reads from the API itself.

Ownership of status fields (one writer per field, so no update is lost):

* the reconcile decides ``observedGeneration``, ``standbyMode``, ``gocdVersion``
  (:data:`RECONCILE_STATUS_KEYS`) and hands them over in memory
  (``ClusterState.reconciled_status``); the supervisor's next status patch carries them, and
  nothing else ever writes them (one status write after a reconcile instead of two, issue #16);
* the supervisor (observation loop and promotion runner of the same process): everything,
  including every condition. The reconcile hands its outcome to the supervisor in memory
  (:class:`~gocd_ha_operator.controller.config.ReconcileProblem`) rather than writing ``Ready``.

Inside the supervisor, every write goes through :meth:`StatusWriter.update`: under one lock per
cluster it reads the resource fresh, applies a change function to that status and patches only
what differs. The observation loop and the promotion runner run concurrently and never write a
status computed from a stale copy.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

import kopf

from gocd_ha_operator.api import conditions as cond
from gocd_ha_operator.api.constants import (
    ANNOTATION_RECONCILED_SPEC,
    API_VERSION,
    BC_TOKEN_KEY,
    KIND,
)
from gocd_ha_operator.api.credentials import ClusterCredentials, decode_secret_value
from gocd_ha_operator.api.spec import GoCDHACluster, ObjectMeta, parse_cluster
from gocd_ha_operator.api.status import GoCDHAClusterStatus, status_patch
from gocd_ha_operator.api.validation import SpecError
from gocd_ha_operator.controller.config import ClusterRef, ClusterState, OperatorConfig
from gocd_ha_operator.controller.observe import events_for
from gocd_ha_operator.controller.reconcile import credential_secret_names, load_credentials
from gocd_ha_operator.kube.names import ChildNames

#: The status fields the reconcile decides: the supervisor patches them only with the values a
#: reconcile handed over, never from an observation.
RECONCILE_STATUS_KEYS: Final = frozenset({"observedGeneration", "standbyMode", "gocdVersion"})
# ANNOTATION_RECONCILED_SPEC (api/constants.py): a restarted operator whose resource's spec is
# invalid by now goes on with the spec the children were built from; a running promotion must
# not wait for someone to fix the spec.


def spec_json(body: Mapping[str, Any]) -> str:
    return json.dumps(body.get("spec") or {}, sort_keys=True, separators=(",", ":"))


class ClusterGoneError(Exception):
    """The resource was deleted while the supervisor worked on it."""


def status_of(body: Mapping[str, Any]) -> GoCDHAClusterStatus:
    try:
        return GoCDHAClusterStatus.model_validate(body.get("status") or {})
    except ValueError:
        return GoCDHAClusterStatus()


@dataclass(frozen=True)
class ParsedCluster:
    """The resource as the supervisor works with it: the spec that parsed last (``cluster``,
    ``None`` when none ever did in this process) with fresh metadata and status, and the reason
    the current spec is invalid (``spec_error``)."""

    cluster: GoCDHACluster | None
    spec_error: SpecError | None


def parse_fresh(body: Mapping[str, Any], state: ClusterState) -> ParsedCluster:
    """``body`` parsed; when its spec is invalid, the last valid spec with this body's metadata
    and status, so that observation and a running promotion go on."""
    try:
        cluster = parse_cluster(body)
    except SpecError as exc:
        last = state.last_valid or _reconciled(body)
        if last is None:
            return ParsedCluster(None, exc)
        state.last_valid = last
        try:
            metadata = ObjectMeta.model_validate(body.get("metadata") or {})
        except ValueError:
            metadata = last.metadata
        update = {"metadata": metadata, "status": status_of(body)}
        return ParsedCluster(last.model_copy(update=update), exc)
    state.last_valid = cluster
    return ParsedCluster(cluster, None)


def _reconciled(body: Mapping[str, Any]) -> GoCDHACluster | None:
    """The resource with the spec of its last successful reconcile, if that parses."""
    saved = ((body.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_RECONCILED_SPEC)
    if not saved:
        return None
    try:
        return parse_cluster({**body, "spec": json.loads(saved)})
    except (SpecError, ValueError):
        return None


def read_credentials(config: OperatorConfig, cluster: GoCDHACluster) -> ClusterCredentials | None:
    """The cluster's credentials as its Secrets hold them, read from the API (never from another
    handler's memory); ``None`` while a Secret the reconcile creates does not exist yet. Never
    generates anything. Raises ``MissingSecretError`` for a user's token Secret that is missing."""
    kube = config.kube
    names = ChildNames(cluster.name)
    wanted = set(credential_secret_names(cluster))
    if cluster.spec.gocd.business_continuity.token_secret_ref is not None:
        wanted.discard(names.bc_token_secret)
    known: dict[str, Mapping[str, Any] | None] = {}
    for name in sorted(wanted):
        secret = known[name] = kube.get("v1", "Secret", cluster.namespace, name)
        key = BC_TOKEN_KEY if name == names.bc_token_secret else "password"
        if secret is None or decode_secret_value(secret, key) is None:
            return None
    return load_credentials(kube, cluster, known=known)


def credentials_key(cluster: GoCDHACluster) -> tuple[str, ...]:
    ref = cluster.spec.gocd.business_continuity.token_secret_ref
    return (cluster.namespace, cluster.name) + ((ref.name, ref.key) if ref is not None else ())


async def cluster_credentials(
    config: OperatorConfig, state: ClusterState, cluster: GoCDHACluster
) -> ClusterCredentials | None:
    """:func:`read_credentials`, remembered in ``state`` until :meth:`ClusterState.
    forget_credentials` (the Secrets are read again only when they may have changed)."""
    key = credentials_key(cluster)
    if state.credentials is not None and state.credentials_key == key:
        return state.credentials
    credentials = await asyncio.to_thread(read_credentials, config, cluster)
    if credentials is not None:
        state.credentials, state.credentials_key = credentials, key
    return credentials


async def check_user_token(
    config: OperatorConfig, state: ClusterState, cluster: GoCDHACluster
) -> None:
    """The one credential the operator does not own can change at any time: the user's token
    Secret (``tokenSecretRef``). One GET; the remembered credentials are dropped when its value
    differs (or it is gone: the next read reports it)."""
    ref = cluster.spec.gocd.business_continuity.token_secret_ref
    cached = state.credentials
    if ref is None or cached is None or state.credentials_key != credentials_key(cluster):
        return
    secret = await asyncio.to_thread(config.kube.get, "v1", "Secret", cluster.namespace, ref.name)
    value = decode_secret_value(secret, ref.key) if secret is not None else None
    if value != cached.bc_token:
        state.forget_credentials()


def ensure_conditions(
    status: GoCDHAClusterStatus, *, generation: int | None, now: datetime
) -> GoCDHAClusterStatus:
    """Every condition type present from the first write (``Unknown`` until observed)."""
    conditions = list(status.conditions)
    for type_ in cond.CONDITION_TYPES:
        if cond.get_condition(conditions, type_) is None:
            conditions, _ = cond.set_condition(
                conditions,
                type=type_,
                status="Unknown",
                reason=cond.INITIALIZING,
                message="not observed yet",
                observed_generation=generation,
                now=now,
            )
    return status.model_copy(update={"conditions": conditions})


Change = Callable[[dict[str, Any], GoCDHAClusterStatus], GoCDHAClusterStatus | None]


class StatusWriter:
    """All status writes of one cluster's supervisor, serialised and based on a fresh read."""

    def __init__(self, config: OperatorConfig, ref: ClusterRef, state: ClusterState) -> None:
        self.config = config
        self.ref = ref
        self.state = state

    @property
    def writes(self) -> int:
        """Twice the status patches this process sent for the cluster, plus one while a patch is
        in flight (see ``update``)."""
        return self.state.status_writes

    def unchanged_since(self, writes: int) -> bool:
        """Whether this process has written no status since :attr:`writes` was ``writes`` (and
        none is in flight): a body read then still holds what this process wrote."""
        return writes == self.state.status_writes and writes % 2 == 0

    async def fetch(self) -> dict[str, Any] | None:
        body: dict[str, Any] | None = await asyncio.to_thread(
            self.config.kube.get, API_VERSION, KIND, self.ref.namespace, self.ref.name
        )
        return body

    async def update(
        self, change: Change, *, read: tuple[dict[str, Any] | None, int] | None = None
    ) -> tuple[dict[str, Any], GoCDHAClusterStatus]:
        """Read the resource, ``change(body, status)``, patch what differs (supervisor-owned
        fields only). ``change`` returning ``None`` writes nothing. Returns the body and the
        status now in force.

        ``read``: a body the caller fetched and the value of :attr:`writes` before it did; it is
        used instead of a new read when this process wrote no status since (only this process
        writes the supervisor's fields, so they are current; what others change — annotations,
        the spec — is picked up by the next call)."""
        async with self.state.status_lock:
            if read is not None and read[0] is not None and self.unchanged_since(read[1]):
                body: dict[str, Any] | None = read[0]
            else:
                body = await self.fetch()
            if body is None:
                raise ClusterGoneError(str(self.ref))
            current = status_of(body)
            new = change(body, current)
            # Every status the supervisor or the runner concludes (written or unchanged) feeds
            # the metrics: one observation for both, promotion steps as they are recorded.
            self.config.metrics.record_status(
                self.ref.namespace,
                self.ref.name,
                current if new is None else new,
                body.get("spec") or {},
            )
            if new is None:
                return body, current
            old = dict(body.get("status") or {})
            patch = {
                key: value
                for key, value in status_patch(old, new.to_api()).items()
                if key not in RECONCILE_STATUS_KEYS
            }
            handed = self.state.reconciled_status
            stored = {key: old[key] for key in RECONCILE_STATUS_KEYS if key in old}
            if handed is not None:
                patch.update(status_patch(stored, handed))
                stored = dict(handed)
            if patch:
                # Odd while a patch is in flight: a body read meanwhile may or may not have it.
                self.state.status_writes += 1
                try:
                    await asyncio.to_thread(
                        self.config.kube.patch_status,
                        API_VERSION,
                        KIND,
                        self.ref.namespace,
                        self.ref.name,
                        patch,
                    )
                finally:
                    self.state.status_writes += 1
                written = {k: v for k, v in new.to_api().items() if k not in RECONCILE_STATUS_KEYS}
                body["status"] = {
                    **{k: v for k, v in old.items() if k not in RECONCILE_STATUS_KEYS},
                    **written,
                    **stored,
                }
            if handed is not None and self.state.reconciled_status is handed:
                self.state.reconciled_status = None  # in status now (or already was)
            return body, new


def post_event(body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
    kopf.event(cast(kopf.Body, body), type=kind, reason=reason, message=message[:1000])


def post_transitions(
    body: Mapping[str, Any], transitions: list[cond.Transition], *, first_observation: bool = False
) -> None:
    """The Events of ``transitions`` (:func:`~gocd_ha_operator.controller.observe.events_for`)."""
    for event in events_for(transitions, first_observation=first_observation):
        post_event(body, *event)
