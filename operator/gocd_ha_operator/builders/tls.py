"""TLS in the pod templates (docs/architecture.md §17): what mounts which part of the cluster's
certificate Secrets.

* Postgres pods mount ``<name>-server-tls`` (``tls.crt``, ``tls.key``, ``ca.crt``) in both the
  postgres container (the entrypoint copies it into place at start) and the guard (which copies
  it again and reloads Postgres when the Secret changes). ``<name>-ca`` (the CA key) is mounted
  nowhere: only the operator reads it.
* GoCD pods and backup Jobs mount ``ca.crt`` only, to verify the server.
* Cold mode: the primary GoCD pod's ``sync-agent`` container, and nothing else, mounts ``tls.crt``
  and ``tls.key`` of ``<name>-sync-agent-tls``: it serves ``/status`` over HTTPS with them.

The Secrets themselves hold generated keys, so the controller makes them (``controller/tls.py``),
never a builder.
"""

from __future__ import annotations

from typing import Any, Final

from gocd_ha_operator.api.constants import (
    ENV_TLS_SECRET_DIR,
    PG_TLS_SECRET_DIR,
    SYNC_TLS_DIR,
    TLS_CA_CERT_KEY,
    TLS_CA_DIR,
    TLS_CERT_KEY,
    TLS_PRIVATE_KEY,
)
from gocd_ha_operator.builders.common import BuildInputs

SERVER_TLS_VOLUME: Final = "server-tls"
CA_VOLUME: Final = "postgres-ca"
SYNC_AGENT_TLS_VOLUME: Final = "sync-agent-tls"
#: The CA certificate file a client verifies Postgres with (GoCD pods, backup Jobs).
CA_FILE: Final = f"{TLS_CA_DIR}/{TLS_CA_CERT_KEY}"


def server_tls_volume(inputs: BuildInputs, file_mode: int) -> dict[str, Any]:
    return {
        "name": SERVER_TLS_VOLUME,
        "secret": {"secretName": inputs.names.server_tls_secret, "defaultMode": file_mode},
    }


def server_tls_mount() -> dict[str, Any]:
    return {"name": SERVER_TLS_VOLUME, "mountPath": PG_TLS_SECRET_DIR, "readOnly": True}


def server_tls_env() -> dict[str, str]:
    return {"name": ENV_TLS_SECRET_DIR, "value": PG_TLS_SECRET_DIR}


def guard_tls_arguments() -> list[str]:
    """The guard's arguments to keep the copied certificate current (a path is a whole argument,
    which the local kubelet rewrites)."""
    return ["--tls-secret-dir", PG_TLS_SECRET_DIR]


def ca_volume(inputs: BuildInputs) -> dict[str, Any]:
    """``ca.crt`` of the server Secret only: a public certificate, never a key."""
    return {
        "name": CA_VOLUME,
        "secret": {
            "secretName": inputs.names.server_tls_secret,
            "defaultMode": 0o444,
            "items": [{"key": TLS_CA_CERT_KEY, "path": TLS_CA_CERT_KEY}],
        },
    }


def ca_mount() -> dict[str, Any]:
    return {"name": CA_VOLUME, "mountPath": TLS_CA_DIR, "readOnly": True}


def sync_agent_tls_volume(inputs: BuildInputs, file_mode: int) -> dict[str, Any]:
    """The sync agent's certificate and key only (not the Secret's ``ca.crt``: a server does not
    need it)."""
    return {
        "name": SYNC_AGENT_TLS_VOLUME,
        "secret": {
            "secretName": inputs.names.sync_agent_tls_secret,
            "defaultMode": file_mode,
            "items": [
                {"key": TLS_CERT_KEY, "path": TLS_CERT_KEY},
                {"key": TLS_PRIVATE_KEY, "path": TLS_PRIVATE_KEY},
            ],
        },
    }


def sync_agent_tls_mount() -> dict[str, Any]:
    # A whole directory, never a subPath: the kubelet then replaces the files in a running pod
    # when the Secret is renewed, and the agent reloads them.
    return {"name": SYNC_AGENT_TLS_VOLUME, "mountPath": SYNC_TLS_DIR, "readOnly": True}


def sync_agent_tls_arguments() -> list[str]:
    """The agent's arguments naming the mounted files (each path a whole argument, which the
    local kubelet rewrites)."""
    return [
        "--tls-cert-file",
        f"{SYNC_TLS_DIR}/{TLS_CERT_KEY}",
        "--tls-key-file",
        f"{SYNC_TLS_DIR}/{TLS_PRIVATE_KEY}",
    ]
