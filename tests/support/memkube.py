"""An in-memory stand-in for ``kube.apply.KubeClient``'s get/create/patch of namespaced objects:
enough for the unit tests of controller code that reads and writes a few Secrets. It counts the
writes, so a test can show that an unchanged object causes none, and the reads (by kind and
name), so a test can show that nothing is read twice."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, cast

from gocd_ha_operator.api.credentials import ClusterCredentials
from gocd_ha_operator.api.spec import GoCDHACluster
from gocd_ha_operator.controller.reconcile import apply_topology_change
from gocd_ha_operator.kube.apply import KubeApiError, KubeClient
from gocd_ha_operator.rules.promotion import Step, topology_before, topology_of


class MemoryKube:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str, str]] = []
        self.reads: list[tuple[str, str]] = []

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append((kind, name))
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        if key in self.objects:
            raise KubeApiError(409, "AlreadyExists", f"{key} exists")
        self.objects[key] = copy.deepcopy(dict(obj))
        self.writes.append(("create", obj["kind"], obj["metadata"]["name"]))
        return copy.deepcopy(self.objects[key])

    def patch(
        self, api_version: str, kind: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        key = (kind, namespace, name)
        if key not in self.objects:
            raise KubeApiError(404, "NotFound", f"{key} not found")
        live = self.objects[key]
        for field, value in patch.items():
            if isinstance(value, Mapping) and isinstance(live.get(field), dict):
                live[field] = {**live[field], **value}
            else:
                live[field] = copy.deepcopy(value)
        self.writes.append(("patch", kind, name))
        return copy.deepcopy(live)


def apply_step(
    kube: MemoryKube,
    raw: dict[str, Any],
    cluster: GoCDHACluster,
    step: Step,
    *,
    credentials: ClusterCredentials,
    operator_image: str = "op:test",
) -> None:
    """What promotion step ``step`` applies to ``kube`` (``reconcile.apply_topology_change``:
    the children whose built form differs between the step before and ``cluster``'s topology)."""
    apply_topology_change(
        cast(KubeClient, kube),  # the get/create/patch the apply layer uses
        raw,
        cluster,
        before=topology_before(cluster, step),
        after=topology_of(cluster),
        credentials=credentials,
        operator_image=operator_image,
        operator_namespace="ops",
    )


class StatusKube:
    """One resource in memory for the status writer and the promotion runner: counts its reads
    and status patches (a merge patch: ``None`` removes a top-level field); nothing else is
    served."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.reads = 0
        self.patches: list[dict[str, Any]] = []

    def get(self, *_: Any) -> dict[str, Any]:
        self.reads += 1
        return copy.deepcopy(self.body)

    def patch_status(self, *args: Any) -> dict[str, Any]:
        patch = args[-1]
        self.patches.append(patch)
        merged = {**self.body.get("status", {}), **patch}
        self.body["status"] = {key: value for key, value in merged.items() if value is not None}
        return copy.deepcopy(self.body)

    def check_may_write(self) -> None:
        """Always allowed: no leader election here."""
