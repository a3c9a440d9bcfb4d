"""Credentials of a cluster: generated once by the caller, never inside a builder.

Builders are pure, so they receive credentials as input. The reconciler generates them only when
their Secret does not exist yet and otherwise reads them back from the Secrets, so passwords never
change under a running database. ``repr`` never shows a value: a credential that reaches a log line
or an exception by accident stays hidden.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from gocd_ha_operator.api.constants import BC_TOKEN_KEY, BC_TOKEN_USER

#: 32 bytes of entropy, URL-safe: no quoting needed in conninfo strings or properties files.
_TOKEN_BYTES = 32


def generate_password() -> str:
    return secrets.token_urlsafe(_TOKEN_BYTES)


@dataclass(frozen=True)
class ClusterCredentials:
    superuser_password: str = field(repr=False)
    replication_password: str = field(repr=False)
    gocd_password: str = field(repr=False)
    operator_password: str = field(repr=False)
    #: The business-continuity-token file content, ``user = password``.
    bc_token: str = field(repr=False)

    def __repr__(self) -> str:
        return "ClusterCredentials(<redacted>)"

    @classmethod
    def generate(cls) -> ClusterCredentials:
        return cls(
            superuser_password=generate_password(),
            replication_password=generate_password(),
            gocd_password=generate_password(),
            operator_password=generate_password(),
            bc_token=f"{BC_TOKEN_USER} = {generate_password()}\n",
        )

    def values(self) -> list[str]:
        """Every secret value (for scrubbing tests and log filters)."""
        return [getattr(self, f.name) for f in fields(self)]


def decode_secret_value(secret: Mapping[str, Any], key: str) -> str | None:
    """The decoded value of ``key`` in a Secret object as the API returns it (``data`` base64)."""
    data = secret.get("data") or {}
    if key in data:
        return base64.b64decode(data[key]).decode()
    string_data = secret.get("stringData") or {}
    value = string_data.get(key)
    return value if isinstance(value, str) else None


def encode_secret_data(values: Mapping[str, str]) -> dict[str, str]:
    """``data`` of a Secret: base64, as the API stores and returns it (so comparisons work)."""
    return {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}


__all__ = [
    "BC_TOKEN_KEY",
    "ClusterCredentials",
    "decode_secret_value",
    "encode_secret_data",
    "generate_password",
]
