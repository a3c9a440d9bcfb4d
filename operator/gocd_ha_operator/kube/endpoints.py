"""Where the operator connects to reach a Service of a cluster.

Inside Kubernetes the answer is the Service's DNS name. Outside a cluster (``demo``, tests, a
developer's laptop) the environment variable ``GOCDHA_ENDPOINTS`` maps Service addresses to
reachable ones: ``{"<namespace>/<service>:<port>": "<host>:<port>"}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from gocd_ha_operator.api.constants import ENV_ENDPOINTS


class EndpointConfigError(ValueError):
    """``GOCDHA_ENDPOINTS`` is not a JSON object of ``"ns/svc:port": "host:port"`` strings."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def _split_host_port(value: str, *, what: str) -> Endpoint:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EndpointConfigError(f"{ENV_ENDPOINTS}: {what} {value!r} is not '<host>:<port>'")
    return Endpoint(host.strip("[]"), int(port))


def parse_overrides(raw: str | None) -> dict[str, Endpoint]:
    """Parse the ``GOCDHA_ENDPOINTS`` value; an empty or missing value means no overrides."""
    if raw is None or not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise EndpointConfigError(f"{ENV_ENDPOINTS} is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise EndpointConfigError(f"{ENV_ENDPOINTS} must be a JSON object")
    overrides: dict[str, Endpoint] = {}
    for key, value in data.items():
        if not isinstance(value, str):
            raise EndpointConfigError(f"{ENV_ENDPOINTS}: the value of {key!r} must be a string")
        if "/" not in key:
            raise EndpointConfigError(f"{ENV_ENDPOINTS}: key {key!r} is not '<ns>/<svc>:<port>'")
        _split_host_port(key.split("/", 1)[1], what="key")
        overrides[key] = _split_host_port(value, what="value")
    return overrides


def resolve(
    namespace: str, service: str, port: int, overrides: Mapping[str, Endpoint] | None = None
) -> Endpoint:
    """The address to connect to for ``service`` in ``namespace`` on ``port``.

    ``overrides`` defaults to what ``GOCDHA_ENDPOINTS`` says in the current environment.
    """
    if overrides is None:
        overrides = parse_overrides(os.environ.get(ENV_ENDPOINTS))
    key = f"{namespace}/{service}:{port}"
    if key in overrides:
        return overrides[key]
    return Endpoint(f"{service}.{namespace}.svc", port)
