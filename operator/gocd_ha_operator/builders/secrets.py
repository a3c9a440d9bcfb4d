"""Secrets: the generated credentials and each GoCD server's ``db.properties``."""

from __future__ import annotations

from typing import Any

from gocd_ha_operator.api.constants import (
    BC_TOKEN_KEY,
    COMPONENT_CREDENTIALS,
    COMPONENT_GOCD,
    DB_PROPERTIES_KEY,
    GOCD_DB_USER,
    OPERATOR_DB_USER,
    POSTGRES_PORT,
    REPLICATION_USER,
    SUPERUSER_NAME,
    Side,
)
from gocd_ha_operator.api.credentials import encode_secret_data
from gocd_ha_operator.builders.common import BuildInputs, metadata, service_host
from gocd_ha_operator.builders.tls import CA_FILE


def _secret(
    inputs: BuildInputs,
    name: str,
    values: dict[str, str],
    *,
    component: str = COMPONENT_CREDENTIALS,
    side: Side | None = None,
    secret_type: str = "Opaque",
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(inputs, name, component, side=side),
        "type": secret_type,
        "data": encode_secret_data(values),
    }


def _basic_auth(inputs: BuildInputs, name: str, username: str, password: str) -> dict[str, Any]:
    return _secret(
        inputs,
        name,
        {"username": username, "password": password},
        secret_type="kubernetes.io/basic-auth",
    )


def build_credential_secrets(inputs: BuildInputs) -> list[dict[str, Any]]:
    """The four Postgres role Secrets and (unless the user brings one) the token Secret."""
    names, creds = inputs.names, inputs.credentials
    secrets = [
        _basic_auth(inputs, names.superuser_secret, SUPERUSER_NAME, creds.superuser_password),
        _basic_auth(inputs, names.replication_secret, REPLICATION_USER, creds.replication_password),
        _basic_auth(inputs, names.gocd_db_user_secret, GOCD_DB_USER, creds.gocd_password),
        _basic_auth(inputs, names.operator_secret, OPERATOR_DB_USER, creds.operator_password),
    ]
    if inputs.cluster.spec.gocd.business_continuity.token_secret_ref is None:
        secrets.append(_secret(inputs, names.bc_token_secret, {BC_TOKEN_KEY: creds.bc_token}))
    return secrets


def escape_properties_value(value: str) -> str:
    """Escape a value for a Java ``.properties`` file (backslash, separators, comments, unicode)."""
    out = []
    for index, char in enumerate(value):
        if char in "\\=:#!":
            out.append("\\" + char)
        elif char == " " and index == 0:
            out.append("\\ ")
        elif char == "\n":
            out.append("\\n")
        elif ord(char) > 0x7E or ord(char) < 0x20:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


def render_db_properties(inputs: BuildInputs, side: Side) -> str:
    """GoCD's ``db.properties``: each server talks to its own side's Postgres instance."""
    host = service_host(inputs, inputs.names.postgres_instance_service(side))
    database = inputs.cluster.spec.postgres.database
    lines = {
        "db.driver": "org.postgresql.Driver",
        # pgjdbc: TLS, the certificate signed by the cluster CA and naming the host (§17).
        "db.url": f"jdbc:postgresql://{host}:{POSTGRES_PORT}/{database}"
        f"?ssl=true&sslmode=verify-full&sslrootcert={CA_FILE}",
        "db.user": GOCD_DB_USER,
        "db.password": inputs.credentials.gocd_password,
    }
    return "".join(f"{k}={escape_properties_value(v)}\n" for k, v in lines.items())


def build_gocd_db_secret(inputs: BuildInputs, side: Side) -> dict[str, Any]:
    return _secret(
        inputs,
        inputs.names.gocd_db_properties_secret(side),
        {DB_PROPERTIES_KEY: render_db_properties(inputs, side)},
        component=COMPONENT_GOCD,
        side=side,
    )
