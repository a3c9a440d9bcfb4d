"""The plugin's view of the Kubernetes API: the user's kubeconfig, and errors as one clear line.

Why not the operator's ``KubeClient``: the plugin needs lists, pod logs (text, not JSON) and the
user's kubeconfig with ``--context``; and every failure must become a :class:`PluginError` whose
message a user can act on ("no permission to patch gocdhaclusters in build"), never a traceback.
Request bodies and Secrets are never part of a message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlencode

import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from gocd_ha_operator.api.constants import (
    API_VERSION,
    APP_NAME,
    LABEL_INSTANCE,
    LABEL_NAME,
    LABEL_SIDE,
    PLURAL,
)

REQUEST_TIMEOUT_SECONDS: Final = 15
FIELD_MANAGER: Final = "kubectl-gocdha"
#: Exit statuses: 1 for "it did not work" (a refused or failed promotion), 2 for bad input.
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2


class PluginError(Exception):
    """A failure to report as one line (the message) with a non-zero exit status."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Target:
    """Where the plugin talks to: the API server and the namespace in force."""

    api: k8s_client.ApiClient
    namespace: str
    server: str


def connect(kubeconfig: str | None, context: str | None, namespace: str | None) -> Target:
    """Load the kubeconfig like kubectl: ``--kubeconfig`` or ``$KUBECONFIG`` or ``~/.kube/config``,
    ``--context`` or the current context; the namespace from ``-n`` or the context, else
    ``default``. In a pod without a kubeconfig, the service account."""
    try:
        contexts, current = k8s_config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=kubeconfig
        )
        chosen = next((c for c in contexts if c["name"] == context), None) if context else current
        if context and chosen is None:
            raise PluginError(f"context {context!r} is not in the kubeconfig")
        configuration = k8s_client.Configuration()
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
        default_namespace = ((chosen or {}).get("context") or {}).get("namespace") or "default"
    except PluginError:
        raise
    except (k8s_config.ConfigException, OSError, TypeError, ValueError, yaml.YAMLError) as exc:
        try:
            configuration = k8s_client.Configuration()
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        except k8s_config.ConfigException:
            raise PluginError(f"cannot load the kubeconfig: {_first_line(exc)}") from None
        default_namespace = "default"
    return Target(
        api=k8s_client.ApiClient(configuration),
        namespace=namespace or default_namespace,
        server=str(configuration.host),
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class Api:
    """The few requests the plugin makes, each failure mapped to a :class:`PluginError`."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.namespace = target.namespace

    def _send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str | None = None,
        text: bool = False,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> Any:
        """The unread response (a watch streams it); only "no answer at all" fails here."""
        headers = {"Accept": "text/plain" if text else "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if query:
            path = f"{path}?{urlencode(query)}"
        api = self.target.api
        try:
            _m, url, header_params, serialized, post_params = api.param_serialize(
                method=method,
                resource_path=path,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            return api.call_api(
                method,
                url,
                header_params=header_params,
                body=serialized,
                post_params=post_params,
                _request_timeout=(REQUEST_TIMEOUT_SECONDS, timeout),
            )
        except Exception as exc:  # urllib3: refused, timeout, TLS, DNS
            raise PluginError(
                f"cannot reach the Kubernetes API at {self.target.server}: {_first_line(exc)}"
            ) from None

    def _fail(self, status: int, raw: bytes, what: str) -> PluginError:
        try:
            message = str(json.loads(raw).get("message") or "")
        except (ValueError, AttributeError):
            message = ""
        if status in (401, 403):
            return PluginError(
                f"no permission to {what} in namespace {self.namespace}"
                + (f": {message}" if message else "")
            )
        if status == 404:
            return PluginError(f"{what}: not found in namespace {self.namespace}")
        return PluginError(f"{what}: HTTP {status} {message}".rstrip(), exit_code=EXIT_FAILED)

    def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str | None = None,
        text: bool = False,
    ) -> Any:
        response = self._send(
            method, path, body=body, query=query, content_type=content_type, text=text
        )
        try:
            raw: bytes = response.read() or b""
        except Exception as exc:
            raise PluginError(
                f"cannot reach the Kubernetes API at {self.target.server}: {_first_line(exc)}"
            ) from None
        status = int(response.status)
        if not 200 <= status < 300:
            raise self._fail(status, raw, what)
        if text:
            return raw.decode("utf-8", errors="replace")
        return json.loads(raw) if raw.strip() else {}

    def watch_cluster(self, name: str, seconds: float) -> Iterator[dict[str, Any]]:
        """Every version of the cluster object the API server sends within ``seconds`` (a
        watch: every status write arrives, so no promotion step is missed between polls)."""
        response = self._send(
            "GET",
            self._clusters_path(),
            query={
                "watch": "true",
                "fieldSelector": f"metadata.name={name}",
                "timeoutSeconds": str(max(1, int(seconds))),
            },
            timeout=seconds + 1,
        )
        status = int(response.status)
        if status != 200:
            raise self._fail(status, response.read() or b"", f"watch gocdhaclusters/{name}")
        buffer = b""
        try:
            for chunk in response.response.stream(4096, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    if (
                        event.get("type") in ("ADDED", "MODIFIED")
                        and (obj.get("metadata") or {}).get("name") == name
                    ):
                        yield obj
        except GeneratorExit:
            raise
        except Exception as exc:  # urllib3 read timeout or reset, a malformed line
            raise PluginError(
                f"the watch of gocdhaclusters/{name} broke off: {_first_line(exc)}",
                exit_code=EXIT_FAILED,
            ) from None
        finally:
            response.response.release_conn()

    def _clusters_path(self, name: str | None = None) -> str:
        path = f"/apis/{API_VERSION}/namespaces/{quote(self.namespace)}/{PLURAL}"
        return f"{path}/{quote(name)}" if name else path

    def cluster(self, name: str) -> dict[str, Any]:
        try:
            found: dict[str, Any] = self._request(
                "GET", self._clusters_path(name), what=f"get gocdhaclusters/{name}"
            )
        except PluginError as exc:
            if "not found" in str(exc):
                raise PluginError(
                    f"GoCDHACluster {name!r} not found in namespace {self.namespace}"
                ) from None
            raise
        return found

    def clusters(self) -> list[dict[str, Any]]:
        listed = self._request("GET", self._clusters_path(), what="list gocdhaclusters")
        return sorted(listed.get("items") or [], key=lambda c: c["metadata"]["name"])

    def annotate(self, name: str, annotations: dict[str, str]) -> dict[str, Any]:
        patched: dict[str, Any] = self._request(
            "PATCH",
            self._clusters_path(name),
            what=f"patch gocdhaclusters/{name}",
            body={"metadata": {"annotations": annotations}},
            query={"fieldManager": FIELD_MANAGER},
            content_type="application/merge-patch+json",
        )
        return patched

    def pods(self, cluster: str, side: str | None) -> list[dict[str, Any]]:
        selector = {LABEL_NAME: APP_NAME, LABEL_INSTANCE: cluster}
        if side is not None:
            selector[LABEL_SIDE] = side
        listed = self._request(
            "GET",
            f"/api/v1/namespaces/{quote(self.namespace)}/pods",
            what="list pods",
            query={"labelSelector": ",".join(f"{k}={v}" for k, v in selector.items())},
        )
        items = listed.get("items") or []
        # Filtered here too: the selector is what we mean, whatever the server did with it.
        return sorted(
            (
                p
                for p in items
                if selector.items() <= ((p.get("metadata") or {}).get("labels") or {}).items()
            ),
            key=lambda p: p["metadata"]["name"],
        )

    def pod_log(self, pod: str, container: str, tail: int | None) -> str:
        query = {"container": container}
        if tail is not None:
            query["tailLines"] = str(tail)
        log: str = self._request(
            "GET",
            f"/api/v1/namespaces/{quote(self.namespace)}/pods/{quote(pod)}/log",
            what=f"get pods/{pod}/log",
            query=query,
            text=True,
        )
        return log
