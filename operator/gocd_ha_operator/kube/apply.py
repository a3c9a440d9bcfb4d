"""The thin apply layer: children to the Kubernetes API with create-or-patch, and nothing more.

It speaks to the API through the official ``kubernetes`` client's ``ApiClient`` with generic paths,
so one small class handles every kind the operator owns. It is synchronous (the client is); the
handlers call it through ``asyncio.to_thread`` so the event loop keeps serving watches and timers.

Rules it keeps:

* create when missing; when present, patch (JSON merge patch) only if the desired object is not
  already a subset of the live one — an unchanged resource causes **no write**;
* never patch a Secret's data once it exists (credentials never change under a running database),
  except Secrets whose content is derived (``db.properties``), which follow their inputs;
* never patch immutable fields (a StatefulSet's volume claim templates, selector and service name;
  a claim's spec other than a larger size; a Service's ``clusterIP``);
* refuse to touch an object with the same name that another owner controls.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

from kubernetes import client as k8s_client

from gocd_ha_operator.api.constants import ENV_SERVICE_ACCOUNT_DIR, OPERATOR_NAME
from gocd_ha_operator.kube.labels import with_owner

logger = logging.getLogger(__name__)

#: apiVersion/kind -> plural, for every kind the operator writes or reads.
PLURALS: Final[dict[tuple[str, str], str]] = {
    ("v1", "Secret"): "secrets",
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Service"): "services",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaims",
    ("v1", "Pod"): "pods",
    ("apps/v1", "StatefulSet"): "statefulsets",
    ("apps/v1", "Deployment"): "deployments",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
    ("batch/v1", "Job"): "jobs",
    ("gocdha.io/v1alpha1", "GoCDHACluster"): "gocdhaclusters",
    # The admission webhook's configuration (the operator keeps its caBundle current).
    ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"): (
        "validatingwebhookconfigurations"
    ),
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("rbac.authorization.k8s.io/v1", "Role"): "roles",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "rolebindings",
    ("coordination.k8s.io/v1", "Lease"): "leases",
}
#: Kinds without a namespace: addressed with ``namespace=""``.
CLUSTER_SCOPED: Final = frozenset(
    {("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration")}
)
REQUEST_TIMEOUT_SECONDS: Final = 30
#: Connections kept open to the API server (the client's default is 5 per CPU): enough for the
#: operator's threads and each reconcile's concurrent requests, so none opens and drops a
#: connection per request.
CONNECTION_POOL_SIZE: Final = 64
#: A watch that delivers nothing (not even the server's end of it) for this long beyond the
#: ``timeoutSeconds`` it asked for is given up as broken.
WATCH_READ_SLACK_SECONDS: Final = 10


class KubeApiError(Exception):
    """The API answered with an error status. The message never includes a request body."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{status} {reason}: {message}")


class NotOwnedError(Exception):
    """An object with a child's name exists and is controlled by someone else."""


def resource_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    plural = PLURALS.get((api_version, kind))
    if plural is None:
        raise ValueError(f"the operator does not manage {kind} ({api_version})")
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if (api_version, kind) in CLUSTER_SCOPED:
        if namespace:
            raise ValueError(f"{kind} is cluster-scoped: no namespace")
        path = f"{base}/{plural}"
    elif not namespace:
        raise ValueError(f"{kind} is namespaced: a namespace is required")
    else:
        path = f"{base}/namespaces/{quote(namespace)}/{plural}"
    return f"{path}/{quote(name)}" if name else path


class KubeClient:
    """Generic get/create/patch/delete of namespaced objects through ``ApiClient``."""

    def __init__(
        self, api_client: k8s_client.ApiClient, *, request_timeout: float = REQUEST_TIMEOUT_SECONDS
    ) -> None:
        self._api = api_client
        #: Called with (method, HTTP status; 0 when no answer came) for every failed request:
        #: the controller counts them in a metric (this layer knows nothing of metrics).
        self.on_error: Callable[[str, int], None] | None = None
        #: Lease holders use a timeout below their renew deadline: a hung request must not
        #: outlive the time the holder may still act on.
        self.request_timeout = request_timeout
        #: Called before every write (any method but GET); raises to stop it. The operator's
        #: leader election uses it: a replica past its renew deadline sends nothing more.
        self.before_write: Callable[[], None] | None = None

    def check_may_write(self) -> None:
        """Raise when this client may not write now (see :attr:`before_write`); for actions that
        are not API writes (a Postgres promotion, an Event) but must follow the same rule."""
        if self.before_write is not None:
            self.before_write()

    def _call(
        self, method: str, path: str, body: Any = None, content_type: str | None = None
    ) -> Any:
        if method != "GET":
            self.check_may_write()
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if method in ("POST", "PATCH"):
            # Recorded in managedFields: `kubectl get -o yaml --show-managed-fields` shows which
            # fields this operator owns.
            path = f"{path}?fieldManager={OPERATOR_NAME}"
        _method, url, header_params, serialized_body, post_params = self._api.param_serialize(
            method=method,
            resource_path=path,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(
                method,
                url,
                header_params=header_params,
                body=serialized_body,
                post_params=post_params,
                _request_timeout=self.request_timeout,
            )
            response.read()  # type: ignore[no-untyped-call]
        except Exception:
            if self.on_error is not None:
                self.on_error(method, 0)
            raise
        raw = response.data or b"{}"
        payload = json.loads(raw) if raw.strip() else {}
        if not 200 <= response.status < 300:
            reason = payload.get("reason") or str(response.reason or "Error")
            message = payload.get("message") or ""
            if self.on_error is not None:
                self.on_error(method, response.status)
            raise KubeApiError(response.status, reason, message)
        return payload

    def watch(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        *,
        resource_version: str | None = None,
        timeout_seconds: int = 60,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """The changes of the one object ``name``: a watch with the field selector
        ``metadata.name=<name>`` (what RBAC allows with ``resourceNames`` and the ``watch``
        verb), from ``resource_version`` on (without it, the object as it is now first). Yields
        ``(type, object)`` — ``ADDED``, ``MODIFIED``, ``DELETED``, or ``ERROR`` with a Status
        (410 Gone: watch again without a version) — until the server ends the watch after
        ``timeout_seconds``; a broken connection raises. Filtered here too: only events of that
        object."""
        query = f"watch=true&fieldSelector={quote(f'metadata.name={name}')}"
        query += f"&timeoutSeconds={int(timeout_seconds)}"
        if resource_version:
            query += f"&resourceVersion={quote(resource_version)}"
        path = f"{resource_path(api_version, kind, namespace)}?{query}"
        _method, url, header_params, _body, _post = self._api.param_serialize(
            method="GET",
            resource_path=path,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(
                "GET",
                url,
                header_params=header_params,
                _request_timeout=(
                    self.request_timeout,
                    timeout_seconds + WATCH_READ_SLACK_SECONDS,
                ),
            )
        except Exception:
            if self.on_error is not None:
                self.on_error("GET", 0)
            raise
        raw = response.response  # urllib3's response, not read yet: the stream
        try:
            if not 200 <= response.status < 300:
                payload = json.loads(raw.data or b"{}") if raw.data else {}
                if self.on_error is not None:
                    self.on_error("GET", response.status)
                raise KubeApiError(
                    response.status,
                    payload.get("reason") or str(response.reason or "Error"),
                    payload.get("message") or "",
                )
            for line in raw:
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                kind_of_event = str(event.get("type") or "")
                if kind_of_event != "ERROR" and (obj.get("metadata") or {}).get("name") != name:
                    continue
                yield kind_of_event, obj
        finally:
            # Possibly in the middle of the stream: this connection is not reused.
            raw.close()
            raw.release_conn()

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self._call(
                "GET", resource_path(api_version, kind, namespace, name)
            )
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def list(
        self, api_version: str, kind: str, namespace: str, label_selector: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        """Objects of one kind in ``namespace`` whose labels include ``label_selector``."""
        selector = ",".join(f"{key}={value}" for key, value in sorted(label_selector.items()))
        result = self._call(
            "GET", f"{resource_path(api_version, kind, namespace)}?labelSelector={quote(selector)}"
        )
        # Filtered here too: what the caller acts on never depends on the server honouring it.
        return [
            item
            for item in result.get("items") or []
            if all(
                (item.get("metadata", {}).get("labels") or {}).get(key) == value
                for key, value in label_selector.items()
            )
        ]

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        result: dict[str, Any] = self._call(
            "POST", resource_path(obj["apiVersion"], obj["kind"], meta["namespace"]), dict(obj)
        )
        return result

    def patch(
        self, api_version: str, kind: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "PATCH",
            resource_path(api_version, kind, namespace, name),
            dict(patch),
            content_type="application/merge-patch+json",
        )
        return result

    def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch the ``status`` subresource (only the fields given)."""
        result: dict[str, Any] = self._call(
            "PATCH",
            resource_path(api_version, kind, namespace, name) + "/status",
            {"status": dict(status)},
            content_type="application/merge-patch+json",
        )
        return result

    def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        *,
        propagation: str | None = None,
    ) -> bool:
        """Delete one object; ``propagation`` ("Background") also removes what it owns (a Job's
        pods)."""
        path = resource_path(api_version, kind, namespace, name)
        if propagation is not None:
            path = f"{path}?propagationPolicy={quote(propagation)}"
        try:
            self._call("DELETE", path)
        except KubeApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True


def is_subset(desired: Any, live: Any) -> bool:
    """Whether ``live`` already has everything ``desired`` says (extra server defaults allowed)."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            key in live and is_subset(value, live[key]) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(desired) == len(live)
            and all(is_subset(d, lv) for d, lv in zip(desired, live, strict=True))
        )
    return bool(desired == live)


def _controller_uid(obj: Mapping[str, Any]) -> str | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            uid = ref.get("uid")
            return str(uid) if uid is not None else None
    return None


def _patchable(desired: dict[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``desired`` that may be patched onto ``live``."""
    kind = desired["kind"]
    patch = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind")}
    if kind == "StatefulSet":
        spec = {
            k: v
            for k, v in desired["spec"].items()
            if k not in ("volumeClaimTemplates", "selector", "serviceName", "podManagementPolicy")
        }
        patch["spec"] = spec
    elif kind == "PersistentVolumeClaim":
        wanted = desired["spec"]["resources"]["requests"]["storage"]
        current = live.get("spec", {}).get("resources", {}).get("requests", {}).get("storage")
        patch.pop("spec", None)
        if current != wanted:
            patch["spec"] = {"resources": {"requests": {"storage": wanted}}}
    elif kind in ("Deployment", "PodDisruptionBudget"):
        patch["spec"] = {k: v for k, v in desired["spec"].items() if k != "selector"}
    elif kind == "Service":
        # ``clusterIP`` is immutable: a Service created with a virtual IP keeps it (an instance
        # Service made before they became headless is left as it is until someone deletes it;
        # docs/operator.md, "Services").
        live_ip = (live.get("spec") or {}).get("clusterIP")
        if live_ip and live_ip != desired["spec"].get("clusterIP", live_ip):
            patch["spec"] = {k: v for k, v in desired["spec"].items() if k != "clusterIP"}
    return patch


@dataclass
class ApplyResult:
    created: list[str] = field(default_factory=list)
    patched: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    @property
    def writes(self) -> int:
        return len(self.created) + len(self.patched) + len(self.deleted)


def _ref(obj: Mapping[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def apply_child(
    kube: KubeClient,
    desired: dict[str, Any],
    owner: Mapping[str, Any],
    result: ApplyResult,
    *,
    immutable_data: bool = False,
    create_first: bool = False,
    known: Mapping[tuple[str, str], Mapping[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """Create ``desired`` (owned by ``owner``) or bring the live object to it; returns live.

    ``create_first``: when the object most likely does not exist yet (a cluster never
    reconciled), try to create it without reading it first — one request — and fall back to
    read, check and patch when it exists after all. ``known``: objects the caller read just
    before, by ``(kind, name)`` (``None``: missing), not read again (issue #16: a reconcile
    read the credential Secrets and the StatefulSets twice)."""
    desired = with_owner(desired, owner)
    meta = desired["metadata"]
    key = (str(desired["kind"]), str(meta["name"]))
    live: dict[str, Any] | None
    if create_first:
        live = None
    elif known is not None and key in known:
        found = known[key]
        live = dict(found) if found is not None else None
    else:
        live = kube.get(desired["apiVersion"], desired["kind"], meta["namespace"], meta["name"])
    if live is None:
        try:
            created = kube.create(desired)
        except KubeApiError as exc:
            if exc.status != 409:
                raise
            # Created concurrently (or by a previous attempt whose answer was lost): re-read.
            live = kube.get(desired["apiVersion"], desired["kind"], meta["namespace"], meta["name"])
            if live is None:
                raise
        else:
            result.created.append(_ref(desired))
            return created
    owner_uid = owner["metadata"]["uid"]
    controller = _controller_uid(live)
    if controller is not None and controller != owner_uid:
        raise NotOwnedError(
            f"{_ref(desired)} exists and is controlled by another object; "
            "rename or remove it so the operator can manage it"
        )
    if immutable_data:
        desired = {k: v for k, v in desired.items() if k not in ("data", "stringData", "type")}
    patch = _patchable(desired, live)
    if is_subset(patch, live):
        result.unchanged.append(_ref(desired))
        return live
    patched = kube.patch(
        desired["apiVersion"], desired["kind"], meta["namespace"], meta["name"], patch
    )
    result.patched.append(_ref(desired))
    return patched


def delete_owned(
    kube: KubeClient,
    *,
    api_version: str,
    kind: str,
    namespace: str,
    name: str,
    owner_uid: str,
    result: ApplyResult,
) -> None:
    """Delete a child that is no longer wanted — only if this resource controls it."""
    live = kube.get(api_version, kind, namespace, name)
    if live is None or _controller_uid(live) != owner_uid:
        return
    if kube.delete(api_version, kind, namespace, name):
        result.deleted.append(f"{kind}/{name}")


def default_client(*, request_timeout: float = REQUEST_TIMEOUT_SECONDS) -> KubeClient:
    """A client configured from the pod's service account, or the local kubeconfig."""
    from kubernetes import config as k8s_config  # noqa: PLC0415 - only when really connecting

    account_dir = os.environ.get(ENV_SERVICE_ACCOUNT_DIR)
    try:
        if account_dir:
            # Outside a cluster (the local kubelet): the token directory stands elsewhere.
            from kubernetes.config.incluster_config import (  # noqa: PLC0415
                InClusterConfigLoader,
            )

            InClusterConfigLoader(  # type: ignore[no-untyped-call]
                token_filename=os.path.join(account_dir, "token"),
                cert_filename=os.path.join(account_dir, "ca.crt"),
            ).load_and_set()
        else:
            k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
    configuration = k8s_client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = CONNECTION_POOL_SIZE
    return KubeClient(k8s_client.ApiClient(configuration), request_timeout=request_timeout)


def client_for(host: str) -> KubeClient:
    """A client for an API server without authentication (tests, the embedded demo)."""
    configuration = k8s_client.Configuration(host=host)
    configuration.connection_pool_maxsize = CONNECTION_POOL_SIZE
    return KubeClient(k8s_client.ApiClient(configuration))
