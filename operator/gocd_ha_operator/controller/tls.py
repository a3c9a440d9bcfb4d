"""A cluster's TLS Secrets: created, renewed and read back by the operator.

docs/architecture.md §17. ``<name>-ca`` keeps the cluster CA and its key (only the operator reads
it); ``<name>-server-tls`` keeps the Postgres server certificate, its key and the CA certificate,
and is what the Postgres pods mount (GoCD pods mount its ``ca.crt`` only). In Cold mode
``<name>-sync-agent-tls`` keeps the sync agent's certificate for the GoCD side Services, signed by
the same CA; only the sync-agent container mounts its ``tls.crt`` and ``tls.key``. The decision
(renew or keep) is :func:`kube.certificates.server_certificate_problem` with the clock passed in;
this module does the I/O. A CA that exists is never replaced here: a new CA would break every
client that still trusts the old one (the docs say how to rotate it by hand). With
``spec.tls.serverCertificateSecret`` no Postgres certificate is issued: :func:`_ensure_provided`
checks the user's Secret and copies a valid one into ``<name>-server-tls``, and its verdict
becomes the ``CertificateReady`` condition (written by the supervisor); the cluster CA is still
made in Cold mode, for the sync agent's certificate.

The operator's own connections verify the server with the CA certificate written to a file
(:func:`ca_file`): libpq takes ``sslrootcert`` as a path. The file holds a public certificate
only; no key is ever written to disk by the operator, logged or put into an exception.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from gocd_ha_operator.api.constants import COMPONENT_GOCD, COMPONENT_POSTGRES, TLS_CA_CERT_KEY
from gocd_ha_operator.api.spec import GoCDHACluster
from gocd_ha_operator.api.status import ConditionStatus
from gocd_ha_operator.kube import certificates
from gocd_ha_operator.kube.apply import ApplyResult, KubeApiError, KubeClient, NotOwnedError
from gocd_ha_operator.kube.labels import object_labels, with_owner
from gocd_ha_operator.kube.names import ChildNames

logger = logging.getLogger(__name__)

#: How often the supervisor checks the TLS Secrets for a due renewal. Far below the two thirds of
#: a server certificate's lifetime at which it is renewed (``kube.certificates``), so a renewal is
#: at most this late; a promotion step and an idle observation read no Secret in between.
CERTIFICATE_CHECK_INTERVAL: Final = timedelta(minutes=5)


@dataclass(frozen=True)
class ServingSecret:
    """A server certificate Secret the CA signs: its name, the names it must carry, the
    component label of the Secret, and what those names are (for log and problem messages)."""

    name: str
    dns_names: tuple[str, ...]
    component: str
    services: str


def provided_source(cluster: GoCDHACluster) -> str | None:
    """The Secret of a user-provided Postgres certificate (``spec.tls.serverCertificateSecret``),
    or ``None``: the operator issues it."""
    tls = cluster.spec.tls
    ref = tls.server_certificate_secret if tls is not None else None
    return ref.name if ref is not None else None


def serving_secrets(cluster: GoCDHACluster) -> list[ServingSecret]:
    """The server certificates the cluster CA signs: Postgres (unless the user provides it,
    :func:`provided_source`); in Cold mode also the sync agent's, whose ``/status`` the operator
    reads over HTTPS (docs/architecture.md §17). A separate certificate, not more names on the
    Postgres one: the GoCD pod then holds no key a Postgres client would accept."""
    names = ChildNames(cluster.name)
    wanted = []
    if provided_source(cluster) is None:
        wanted.append(
            ServingSecret(
                names.server_tls_secret,
                tuple(certificates.postgres_dns_names(cluster.name, cluster.namespace)),
                COMPONENT_POSTGRES,
                "Postgres",
            )
        )
    if cluster.spec.gocd.effective_standby_mode == "Cold":
        wanted.append(
            ServingSecret(
                names.sync_agent_tls_secret,
                tuple(certificates.sync_agent_dns_names(cluster.name, cluster.namespace)),
                COMPONENT_GOCD,
                "GoCD side",
            )
        )
    return wanted


class CertificateReason(StrEnum):
    """Reasons of the ``CertificateReady`` condition (only with a user-provided certificate)."""

    #: The user's Secret is valid and is what the instances are given.
    PROVIDED = "Provided"
    #: The Secret named in ``spec.tls.serverCertificateSecret`` does not exist.
    SECRET_NOT_FOUND = "SecretNotFound"
    #: It exists but cannot be served (a name missing, expired, wrong key or CA...).
    INVALID = "CertificateInvalid"


@dataclass(frozen=True)
class CertificateVerdict:
    """What ``CertificateReady`` says about a user-provided certificate."""

    status: ConditionStatus
    reason: CertificateReason
    message: str


@dataclass(frozen=True)
class CertificateCheck:
    """The outcome of a certificate check: the CA certificate clients verify with (``None``:
    none yet) and, with a user-provided certificate, the verdict on it (``None``: the operator
    issues the certificate itself, no condition)."""

    ca_pem: bytes | None
    verdict: CertificateVerdict | None = None
    #: What changed when the check wrote a new server certificate into ``<name>-server-tls``
    #: (the operator's renewal, or a user's certificate copied); ``None`` when it wrote none.
    updated: str | None = None


def _operator_secret_names(cluster: GoCDHACluster) -> set[str]:
    names = ChildNames(cluster.name)
    return {
        names.ca_secret,
        names.server_tls_secret,
        names.superuser_secret,
        names.replication_secret,
        names.gocd_db_user_secret,
        names.operator_secret,
        names.bc_token_secret,
        names.gocd_db_properties_secret("a"),
        names.gocd_db_properties_secret("b"),
        names.sync_agent_tls_secret,
    }


def _controlled_by_other(live: Mapping[str, Any], owner_uid: str) -> bool:
    for ref in (live.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("uid") != owner_uid:
            return True
    return False


def _secret(
    cluster: GoCDHACluster,
    name: str,
    data: dict[str, str],
    kind: str,
    component: str = COMPONENT_POSTGRES,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": cluster.namespace,
            "labels": object_labels(cluster.name, component, None, None),
        },
        "type": kind,
        "data": data,
    }


def _write(
    kube: KubeClient,
    owner: Mapping[str, Any],
    secret: dict[str, Any],
    exists: bool,
    result: ApplyResult,
) -> None:
    meta = secret["metadata"]
    if exists:
        kube.patch("v1", "Secret", meta["namespace"], meta["name"], {"data": secret["data"]})
        result.patched.append(f"Secret/{meta['name']}")
        return
    try:
        kube.create(with_owner(secret, owner))
    except KubeApiError as exc:
        if exc.status != 409:
            raise
        # Created concurrently: the other writer's certificate is as good; keep it.
        result.unchanged.append(f"Secret/{meta['name']}")
        return
    result.created.append(f"Secret/{meta['name']}")


def _keep_labels(
    kube: KubeClient,
    cluster: GoCDHACluster,
    live: Mapping[str, Any],
    result: ApplyResult,
    component: str = COMPONENT_POSTGRES,
) -> None:
    """Put the child labels back on a kept Secret someone edited (its data stays)."""
    meta = live.get("metadata") or {}
    wanted = object_labels(cluster.name, component, None, None)
    labels = meta.get("labels") or {}
    if all(labels.get(key) == value for key, value in wanted.items()):
        result.unchanged.append(f"Secret/{meta.get('name')}")
        return
    kube.patch("v1", "Secret", cluster.namespace, meta["name"], {"metadata": {"labels": wanted}})
    result.patched.append(f"Secret/{meta.get('name')}")


def ensure_certificates(
    kube: KubeClient,
    owner: Mapping[str, Any],
    cluster: GoCDHACluster,
    *,
    now: datetime,
    result: ApplyResult | None = None,
    create: bool = True,
) -> bytes | None:
    """:func:`check_certificates`' CA certificate PEM (``None``: none yet)."""
    return check_certificates(kube, owner, cluster, now=now, result=result, create=create).ca_pem


def check_certificates(
    kube: KubeClient,
    owner: Mapping[str, Any],
    cluster: GoCDHACluster,
    *,
    now: datetime,
    result: ApplyResult | None = None,
    create: bool = True,
) -> CertificateCheck:
    """Make sure the CA and current server certificates (:func:`serving_secrets`) exist and,
    with a user-provided Postgres certificate, check and copy it (:func:`_ensure_provided`).

    ``ca_pem`` of the result is what the operator verifies with: the cluster CA, or with a
    user-provided certificate its ``ca.crt`` (followed by the cluster CA in Cold mode, which
    signs the sync agent's certificate). Writes only when something is missing or due: an
    unchanged cluster causes no write. With ``create=False`` (the supervisor's periodic check)
    only existing Secrets are renewed: making them is the reconcile's job, which does not run
    for an invalid resource; ``ca_pem`` is ``None`` while they do not exist. Raises
    :class:`NotOwnedError` when a Secret of the same name is controlled by another object.
    """
    result = result if result is not None else ApplyResult()
    source = provided_source(cluster)
    serving = serving_secrets(cluster)
    updates: list[str] = []
    if source is None:
        cluster_ca = _ensure_issued(
            kube, owner, cluster, serving, now=now, result=result, create=create, updates=updates
        )
        return CertificateCheck(cluster_ca, updated="; ".join(updates) or None)
    check = _ensure_provided(kube, owner, cluster, source, now=now, result=result)
    if check.updated is not None:
        updates.append(check.updated)
    ca_pem = check.ca_pem
    if serving:
        cluster_ca = _ensure_issued(
            kube, owner, cluster, serving, now=now, result=result, create=create, updates=updates
        )
        if ca_pem is not None and cluster_ca is not None:
            ca_pem = ca_pem.rstrip(b"\n") + b"\n" + cluster_ca
    return CertificateCheck(ca_pem, check.verdict, updated="; ".join(updates) or None)


def _ensure_issued(
    kube: KubeClient,
    owner: Mapping[str, Any],
    cluster: GoCDHACluster,
    serving: list[ServingSecret],
    *,
    now: datetime,
    result: ApplyResult,
    create: bool,
    updates: list[str],
) -> bytes | None:
    """The cluster CA and the certificates it signs (``serving``): made when missing, renewed
    when due; the CA certificate PEM (``None`` with ``create=False`` while they do not exist).
    What was issued is appended to ``updates``."""
    names = ChildNames(cluster.name)
    owner_uid = str(owner["metadata"]["uid"])
    live_ca = kube.get("v1", "Secret", cluster.namespace, names.ca_secret)
    # The first server certificate Secret, when read here to tell whether there is anything to
    # renew, is not read again by its own check (one read per Secret, issue #16).
    known: dict[str, Mapping[str, Any] | None] = {}
    if not create:
        if live_ca is None:
            return None
        first = known[serving[0].name] = kube.get(
            "v1", "Secret", cluster.namespace, serving[0].name
        )
        if first is None:
            return None
    if live_ca is not None and _controlled_by_other(live_ca, owner_uid):
        raise NotOwnedError(f"Secret/{names.ca_secret} exists and is controlled by another object")
    ca = certificates.CertificateAuthority.from_secret_data(
        live_ca.get("data") if live_ca else None
    )
    if ca is None:
        if live_ca is not None:
            logger.warning(
                "Secret %s/%s does not hold a usable CA (ca.crt, ca.key); generating a new CA",
                cluster.namespace,
                names.ca_secret,
            )
        ca = certificates.generate_ca(f"{cluster.name}.{cluster.namespace} gocd-ha CA", now=now)
        _write(
            kube,
            owner,
            _secret(cluster, names.ca_secret, ca.secret_data(), "Opaque"),
            live_ca is not None,
            result,
        )
        if live_ca is None:
            # Whoever created it first wins; sign with what is stored.
            stored = kube.get("v1", "Secret", cluster.namespace, names.ca_secret)
            kept = certificates.CertificateAuthority.from_secret_data(
                stored.get("data") if stored else None
            )
            ca = kept or ca
    else:
        assert live_ca is not None
        _keep_labels(kube, cluster, live_ca, result)
    for wanted in serving:
        issued = _ensure_serving(
            kube,
            owner,
            cluster,
            ca,
            wanted,
            now=now,
            result=result,
            create=create,
            known=known,
        )
        if issued is not None:
            updates.append(issued)
    return ca.cert_pem


def _ensure_serving(
    kube: KubeClient,
    owner: Mapping[str, Any],
    cluster: GoCDHACluster,
    ca: certificates.CertificateAuthority,
    serving: ServingSecret,
    *,
    now: datetime,
    result: ApplyResult,
    create: bool,
    known: Mapping[str, Mapping[str, Any] | None],
) -> str | None:
    """Keep ``serving``'s certificate when it is current, otherwise issue a new one signed by
    ``ca`` (also at two thirds of its lifetime) and say so. With ``create=False`` a missing
    Secret is left to the reconcile. ``known``: Secrets this check has just read, by name."""
    live = (
        known[serving.name]
        if serving.name in known
        else kube.get("v1", "Secret", cluster.namespace, serving.name)
    )
    if live is None and not create:
        return None
    if live is not None and _controlled_by_other(live, str(owner["metadata"]["uid"])):
        raise NotOwnedError(f"Secret/{serving.name} exists and is controlled by another object")
    kept = certificates.ServingCertificate.from_secret_data(live.get("data") if live else None)
    why = (
        "it does not exist"
        if kept is None
        else certificates.server_certificate_problem(
            kept, ca, serving.dns_names, now=now, services=serving.services
        )
    )
    if why is None:
        assert live is not None
        _keep_labels(kube, cluster, live, result, serving.component)
        return None
    logger.info(
        "Issuing a new %s server certificate in Secret %s/%s: %s.",
        serving.services,
        cluster.namespace,
        serving.name,
        why,
    )
    fresh = certificates.issue_server_certificate(ca, serving.dns_names, now=now)
    _write(
        kube,
        owner,
        _secret(cluster, serving.name, fresh.secret_data(), "kubernetes.io/tls", serving.component),
        live is not None,
        result,
    )
    summary = certificates.certificate_summary(fresh.cert_pem)
    return f"issued a new {serving.services} certificate in {serving.name} ({summary}): {why}"


def _ensure_provided(
    kube: KubeClient,
    owner: Mapping[str, Any],
    cluster: GoCDHACluster,
    source: str,
    *,
    now: datetime,
    result: ApplyResult,
) -> CertificateCheck:
    """A user-provided server certificate (docs/architecture.md §17): the operator issues none.

    The user's Secret ``source`` is checked (:func:`kube.certificates.provided_certificate`) and,
    when valid and different, copied into ``<name>-server-tls``, which is what the pods mount: a
    Secret that fails the check never reaches an instance, which keeps serving the last valid
    copy (the verdict says so). Runs from the reconcile and from the supervisor's periodic check,
    which both may create the copy: a Secret fixed later needs no spec change to be taken up.
    """
    names = ChildNames(cluster.name)
    field_name = f"{certificates.PROVIDED_FIELD}.name"
    owner_uid = str(owner["metadata"]["uid"])
    live_server = kube.get("v1", "Secret", cluster.namespace, names.server_tls_secret)
    if live_server is not None and _controlled_by_other(live_server, owner_uid):
        raise NotOwnedError(
            f"Secret/{names.server_tls_secret} exists and is controlled by another object"
        )
    kept = certificates.ServingCertificate.from_secret_data(
        live_server.get("data") if live_server else None
    )
    fresh: certificates.ServingCertificate | None = None
    reason = CertificateReason.INVALID
    if source in _operator_secret_names(cluster):
        why = f"{source!r} is a Secret the operator writes itself; name the Secret that holds yours"
    else:
        user = kube.get("v1", "Secret", cluster.namespace, source)
        if user is None:
            reason = CertificateReason.SECRET_NOT_FOUND
            why = f"Secret {cluster.namespace}/{source} does not exist"
        else:
            dns_names = certificates.client_dns_names(cluster.name, cluster.namespace)
            fresh, problem = certificates.provided_certificate(user.get("data"), dns_names, now=now)
            why = f"Secret {cluster.namespace}/{source}: {problem}" if problem else ""
    if fresh is None:
        if kept is None:
            consequence = (
                f"no certificate to serve: the Postgres pods wait for {names.server_tls_secret}"
            )
        else:
            until = certificates.not_valid_after(kept.cert_pem)
            if until is None or until > now:
                ends = f" (valid until {until.isoformat()})" if until is not None else ""
                consequence = f"the instances keep the last valid certificate{ends}"
            else:
                consequence = (
                    f"the instances keep the last certificate, which expired at "
                    f"{until.isoformat()}: new connections fail verification"
                )
        message = f"{field_name}: {why}; {consequence}"
        logger.warning("%s/%s: %s", cluster.namespace, cluster.name, message)
        return CertificateCheck(
            kept.ca_pem if kept is not None else None,
            CertificateVerdict("False", reason, message),
        )
    served = certificates.certificate_summary(fresh.cert_pem)
    verdict = CertificateVerdict(
        "True",
        CertificateReason.PROVIDED,
        f"Postgres is given the certificate of Secret {source} ({served})",
    )
    if kept == fresh:
        assert live_server is not None
        _keep_labels(kube, cluster, live_server, result)
        return CertificateCheck(fresh.ca_pem, verdict)
    logger.info(
        "Copying the certificate of Secret %s/%s (%s) to %s.",
        cluster.namespace,
        source,
        served,
        names.server_tls_secret,
    )
    _write(
        kube,
        owner,
        _secret(cluster, names.server_tls_secret, fresh.secret_data(), "kubernetes.io/tls"),
        live_server is not None,
        result,
    )
    return CertificateCheck(
        fresh.ca_pem,
        verdict,
        updated=f"copied the certificate of Secret {source} ({served}) to "
        f"{names.server_tls_secret}",
    )


def create_fresh_certificates(
    kube: KubeClient,
    owner: Mapping[str, Any],
    cluster: GoCDHACluster,
    *,
    now: datetime,
    result: ApplyResult,
) -> bytes | None:
    """A resource never reconciled: create the CA and server Secrets without reading first (one
    request each, issue #16). ``None`` when one of them exists after all (created concurrently
    or left from an earlier owner): the caller then goes through :func:`ensure_certificates`,
    which reads, keeps what is valid and signs with the stored CA. ``None`` as well with a
    user-provided certificate: the user's Secret is read and checked there."""
    if provided_source(cluster) is not None:
        return None
    secrets = fresh_certificate_secrets(cluster, now=now)
    for secret in secrets:
        try:
            kube.create(with_owner(secret, owner))
        except KubeApiError as exc:
            if exc.status == 409:
                return None
            raise
        result.created.append(f"Secret/{secret['metadata']['name']}")
    return base64.b64decode(secrets[1]["data"][TLS_CA_CERT_KEY])


def fresh_certificate_secrets(cluster: GoCDHACluster, *, now: datetime) -> list[dict[str, Any]]:
    """A new CA and every server certificate (:func:`serving_secrets`) as Secrets (no owner),
    the CA first: what ``render`` prints, like the credentials it generates afresh on every
    run. No Postgres certificate with a user-provided one (the operator copies the user's
    Secret, which ``render`` cannot read), and then no CA unless something else needs it."""
    names = ChildNames(cluster.name)
    if not serving_secrets(cluster):
        return []
    ca = certificates.generate_ca(f"{cluster.name}.{cluster.namespace} gocd-ha CA", now=now)
    out = [_secret(cluster, names.ca_secret, ca.secret_data(), "Opaque")]
    for serving in serving_secrets(cluster):
        server = certificates.issue_server_certificate(ca, serving.dns_names, now=now)
        out.append(
            _secret(
                cluster, serving.name, server.secret_data(), "kubernetes.io/tls", serving.component
            )
        )
    return out


def read_ca_certificate(kube: KubeClient, cluster: GoCDHACluster) -> bytes | None:
    """The CA certificate clients verify with (``ca.crt`` of the server Secret), or ``None``."""
    names = ChildNames(cluster.name)
    secret = kube.get("v1", "Secret", cluster.namespace, names.server_tls_secret)
    raw = ((secret or {}).get("data") or {}).get(TLS_CA_CERT_KEY)
    if not raw:
        return None
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        return None


def ca_file(ca_pem: bytes, directory: Path | None = None) -> Path:
    """A file holding ``ca_pem`` (named by its digest, written once, atomically) for libpq's
    ``sslrootcert``. Below the temporary directory: the operator's root filesystem is
    read-only and only ``/tmp`` is writable (docs/architecture.md §13)."""
    directory = directory or Path(tempfile.gettempdir()) / "gocdha-ca"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{hashlib.sha256(ca_pem).hexdigest()[:24]}.crt"
    if not path.exists() or path.read_bytes() != ca_pem:
        fd, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(ca_pem)
        os.replace(temporary, path)
    return path
