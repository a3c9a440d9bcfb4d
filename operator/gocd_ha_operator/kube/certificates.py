"""TLS material: the admission webhook's, and each cluster's Postgres CA and server certificate.

The webhook: a self-signed CA and a serving certificate signed by it. Each GoCDHACluster: a CA
kept with its key in ``<name>-ca`` (only the operator reads it, to re-sign) and a server
certificate for every name a client uses in ``<name>-server-tls`` (docs/architecture.md §17),
and in Cold mode one for the GoCD side Services the sync agent serves ``/status`` under in
``<name>-sync-agent-tls``, each renewed at two thirds of its lifetime (:func:`renewal_due`).
Or, with ``spec.tls.serverCertificateSecret``, the user's Postgres certificate, checked by
:func:`provided_certificate` before the operator copies it.

Pure functions over PEM bytes (the clock is passed in). The operator keeps the result in a Secret
(``ca.crt``, ``tls.crt``, ``tls.key``) so a restart serves the same certificate and the API
server's ``caBundle`` stays valid; the CA's private key is not kept: renewing makes a new CA, and
the operator puts the new CA into the ValidatingWebhookConfiguration when it starts.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gocd_ha_operator.api.constants import (
    TLS_CA_CERT_KEY,
    TLS_CA_PRIVATE_KEY,
)
from gocd_ha_operator.kube.names import ChildNames

#: Validity of a generated certificate, and how long before its end it is replaced.
VALIDITY: Final = dt.timedelta(days=365)
RENEW_BEFORE: Final = dt.timedelta(days=30)
CA_KEY: Final = "ca.crt"
CERT_KEY: Final = "tls.crt"
PRIVATE_KEY: Final = "tls.key"


@dataclass(frozen=True)
class ServingCertificate:
    """PEM-encoded CA certificate, serving certificate and the serving certificate's key."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes = b""

    def __repr__(self) -> str:  # the key never reaches a log line or an exception
        return f"ServingCertificate(ca={len(self.ca_pem)}B, cert={len(self.cert_pem)}B, key=***)"

    def secret_data(self) -> dict[str, str]:
        """``data`` of the Secret that keeps it (base64, as the API wants)."""
        return {
            CA_KEY: base64.b64encode(self.ca_pem).decode("ascii"),
            CERT_KEY: base64.b64encode(self.cert_pem).decode("ascii"),
            PRIVATE_KEY: base64.b64encode(self.key_pem).decode("ascii"),
        }

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str] | None) -> ServingCertificate | None:
        """The certificate a Secret keeps, or ``None`` when a key is missing or not base64."""
        if not data or any(key not in data for key in (CA_KEY, CERT_KEY, PRIVATE_KEY)):
            return None
        try:
            return cls(
                ca_pem=base64.b64decode(data[CA_KEY], validate=True),
                cert_pem=base64.b64decode(data[CERT_KEY], validate=True),
                key_pem=base64.b64decode(data[PRIVATE_KEY], validate=True),
            )
        except ValueError:
            return None


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    *,
    now: dt.datetime,
    validity: dt.timedelta,
) -> x509.Certificate:
    ca_name = _name(common_name)
    start = now - dt.timedelta(minutes=5)  # tolerate clocks slightly behind ours
    return (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    dns_names: Sequence[str],
    *,
    now: dt.datetime,
    validity: dt.timedelta,
) -> tuple[bytes, bytes]:
    """``(certificate PEM, key PEM)`` of a new server certificate for ``dns_names``."""
    if not dns_names:
        raise ValueError("a serving certificate needs at least one DNS name")
    start = now - dt.timedelta(minutes=5)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(dns_names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(min(now + validity, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in dns_names]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def generate(dns_names: Sequence[str], *, now: dt.datetime) -> ServingCertificate:
    """A new CA and a serving certificate for ``dns_names`` (the first is the common name)."""
    if not dns_names:
        raise ValueError("a serving certificate needs at least one DNS name")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _ca_certificate(ca_key, "gocd-ha-operator webhook CA", now=now, validity=VALIDITY)
    cert_pem, key_pem = _server_certificate(ca_key, ca_cert, dns_names, now=now, validity=VALIDITY)
    return ServingCertificate(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert_pem,
        key_pem=key_pem,
    )


def unusable_because(
    certificate: ServingCertificate,
    dns_names: Sequence[str],
    *,
    now: dt.datetime,
    renew_before: dt.timedelta = RENEW_BEFORE,
) -> str | None:
    """Why ``certificate`` cannot be served for ``dns_names`` now; ``None`` when it can."""
    try:
        ca = x509.load_pem_x509_certificate(certificate.ca_pem)
        cert = x509.load_pem_x509_certificate(certificate.cert_pem)
        key = serialization.load_pem_private_key(certificate.key_pem, password=None)
    except ValueError:
        return "it cannot be read"
    if cert.not_valid_after_utc - renew_before < now:
        return "it expires soon"
    if cert.not_valid_before_utc > now:
        return "it is not valid yet"
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "the CA did not sign it"
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return "it names no DNS names"
    if not set(dns_names) <= set(sans.value.get_values_for_type(x509.DNSName)):
        return "it does not name the webhook Service"
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if public != cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        return "its key does not match"
    return None


# --- a cluster's Postgres CA and server certificate (docs/architecture.md §17) -----------------

#: Lifetime of a cluster CA. It is not renewed automatically: clients trust it by its
#: ``ca.crt``, and a new CA would break every client that still holds the old one (see §17).
CLUSTER_CA_VALIDITY: Final = dt.timedelta(days=3650)
#: Lifetime of a Postgres server certificate; it is renewed at :data:`RENEW_FRACTION` of it.
SERVER_CERT_VALIDITY: Final = dt.timedelta(days=90)
#: A certificate is renewed once this fraction of its lifetime has passed.
RENEW_FRACTION: Final = 2 / 3
#: The cluster DNS domain the fully qualified Service names end in.
CLUSTER_DOMAIN: Final = "cluster.local"


@dataclass(frozen=True)
class CertificateAuthority:
    """A cluster CA: its certificate and private key (PEM)."""

    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:  # the key never reaches a log line or an exception
        return f"CertificateAuthority(cert={len(self.cert_pem)}B, key=***)"

    def secret_data(self) -> dict[str, str]:
        return {
            TLS_CA_CERT_KEY: base64.b64encode(self.cert_pem).decode("ascii"),
            TLS_CA_PRIVATE_KEY: base64.b64encode(self.key_pem).decode("ascii"),
        }

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str] | None) -> CertificateAuthority | None:
        """The CA a Secret keeps, or ``None`` when a key is missing or unreadable."""
        if not data or any(key not in data for key in (TLS_CA_CERT_KEY, TLS_CA_PRIVATE_KEY)):
            return None
        try:
            ca = cls(
                cert_pem=base64.b64decode(data[TLS_CA_CERT_KEY], validate=True),
                key_pem=base64.b64decode(data[TLS_CA_PRIVATE_KEY], validate=True),
            )
            ca.load()
        except ValueError:
            return None
        return ca

    def load(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """The parsed certificate and key; ``ValueError`` when they cannot be used to sign."""
        cert = x509.load_pem_x509_certificate(self.cert_pem)
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the CA key is not an EC key")
        return cert, key


def postgres_dns_names(cluster: str, namespace: str) -> list[str]:
    """Every name a client may use for a Postgres of ``cluster``: the instance Services of both
    sides and the role Services, short, ``.<ns>``, ``.<ns>.svc`` and fully qualified."""
    names = ChildNames(cluster)
    services = [
        names.postgres_instance_service("a"),
        names.postgres_instance_service("b"),
        names.postgres_role_service("primary"),
        names.postgres_role_service("standby"),
    ]
    return _service_dns_names(services, namespace)


def sync_agent_dns_names(cluster: str, namespace: str) -> list[str]:
    """Every name the operator may dial the Cold sync agent by: the GoCD side Services of both
    sides (the agent runs beside whichever server is primary), in the same four forms. Not the
    primary Service ``<name>-gocd``: it carries users' HTTP on 8153, never the agent's port."""
    names = ChildNames(cluster)
    services = [names.gocd_side_service("a"), names.gocd_side_service("b")]
    return _service_dns_names(services, namespace)


def _service_dns_names(services: Sequence[str], namespace: str) -> list[str]:
    out: list[str] = []
    for service in services:
        base = f"{service}.{namespace}.svc"
        out += [base, service, f"{service}.{namespace}", f"{base}.{CLUSTER_DOMAIN}"]
    return out


def generate_ca(
    common_name: str, *, now: dt.datetime, validity: dt.timedelta = CLUSTER_CA_VALIDITY
) -> CertificateAuthority:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _ca_certificate(key, common_name, now=now, validity=validity)
    return CertificateAuthority(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def issue_server_certificate(
    ca: CertificateAuthority,
    dns_names: Sequence[str],
    *,
    now: dt.datetime,
    validity: dt.timedelta = SERVER_CERT_VALIDITY,
) -> ServingCertificate:
    """A new key and server certificate for ``dns_names``, signed by ``ca`` (``ca_pem`` = the
    CA certificate, what clients verify with)."""
    ca_cert, ca_key = ca.load()
    cert_pem, key_pem = _server_certificate(ca_key, ca_cert, dns_names, now=now, validity=validity)
    return ServingCertificate(ca_pem=ca.cert_pem, cert_pem=cert_pem, key_pem=key_pem)


def renew_at(cert_pem: bytes) -> dt.datetime:
    """When a certificate is due for renewal: at two thirds of its lifetime."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) * RENEW_FRACTION


def renewal_due(cert_pem: bytes, *, now: dt.datetime) -> bool:
    """True from two thirds of the certificate's lifetime on (and for an unreadable one)."""
    try:
        return now >= renew_at(cert_pem)
    except ValueError:
        return True


def serial_number(cert_pem: bytes) -> int:
    return int(x509.load_pem_x509_certificate(cert_pem).serial_number)


def server_certificate_problem(
    certificate: ServingCertificate,
    ca: CertificateAuthority,
    dns_names: Sequence[str],
    *,
    now: dt.datetime,
    services: str = "Postgres",
) -> str | None:
    """Why the kept server certificate must be replaced now; ``None`` when it may stay.

    Replaced when: unreadable, due for renewal (:func:`renewal_due`), not yet valid, not signed
    by ``ca`` (or its ``ca.crt`` is not ``ca``'s), missing one of ``dns_names``, or its key
    does not match (``services`` names what ``dns_names`` are in that message). The message
    never contains key material.
    """
    if certificate.ca_pem != ca.cert_pem:
        return "its ca.crt is not the cluster CA's"
    if renewal_due(certificate.cert_pem, now=now):
        return "two thirds of its lifetime have passed"
    problem = unusable_because(certificate, dns_names, now=now, renew_before=dt.timedelta(0))
    if problem == "it does not name the webhook Service":
        return f"it does not name every {services} Service"
    return problem


# --- a user-provided server certificate (spec.tls.serverCertificateSecret, §17) ----------------

#: The field a user-provided certificate comes from, as messages name it.
PROVIDED_FIELD: Final = "spec.tls.serverCertificateSecret"


def client_dns_names(cluster: str, namespace: str) -> list[str]:
    """The names this project's clients verify a Postgres server against (``<svc>.<ns>.svc`` of
    the instance and role Services): what a user-provided certificate must name."""
    return [name for name in postgres_dns_names(cluster, namespace) if name.endswith(".svc")]


def _pem_certificates(pem: bytes) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise ValueError("no PEM certificate")
    return x509.load_pem_x509_certificates(pem)


def _name_matches(pattern: str, name: str) -> bool:
    """RFC 6125 matching as libpq does it: exact (case-insensitive), or a ``*`` as the whole
    left-most label standing for exactly one label."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern == name:
        return True
    if pattern.startswith("*.") and "." in name:
        return name.split(".", 1)[1] == pattern[2:]
    return False


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _chain_problem(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    now: dt.datetime,
) -> str | None:
    """Why no chain leads from ``leaf`` through ``intermediates`` (the rest of ``tls.crt``) to one
    of ``roots`` (``ca.crt``) with every certificate valid at ``now``; ``None`` when one does."""
    current = leaf
    for _ in range(len(intermediates) + 1):
        root = next((ca for ca in roots if _issued_by(current, ca)), None)
        if root is not None:
            if not root.not_valid_before_utc <= now <= root.not_valid_after_utc:
                subject = root.subject.rfc4514_string()
                return f"the CA in ca.crt that signed it ({subject}) is not valid now"
            return None
        parent = next((ca for ca in intermediates if _issued_by(current, ca)), None)
        if parent is None or parent is current:
            break
        if not parent.not_valid_before_utc <= now <= parent.not_valid_after_utc:
            subject = parent.subject.rfc4514_string()
            return f"the intermediate CA {subject} in tls.crt is not valid now"
        current = parent
    return (
        "its ca.crt does not verify its tls.crt: no certificate in ca.crt signed it "
        "(nor the last intermediate of tls.crt)"
    )


def provided_certificate(
    data: Mapping[str, str] | None,
    dns_names: Sequence[str],
    *,
    now: dt.datetime,
) -> tuple[ServingCertificate | None, str | None]:
    """A user's server certificate Secret (``data`` as the API returns it, base64), checked.

    ``(certificate, None)`` when Postgres can serve it to clients that verify fully: ``tls.crt``
    (the server certificate first, then any intermediates), ``tls.key`` (unencrypted PEM) and
    ``ca.crt`` (the CA clients trust) are present and readable, the key belongs to the
    certificate, it is valid at ``now``, names every one of ``dns_names`` (wildcards as libpq
    matches them) and ``ca.crt`` verifies it. Otherwise ``(None, what is wrong)``: one sentence
    naming the key and what is missing; never key material. User input: whatever a parser
    raises on it becomes a verdict, never an exception.
    """
    try:
        return _provided_certificate(data or {}, dns_names, now=now)
    except Exception as exc:  # a malformed extension, an unsupported algorithm...
        return None, f"it cannot be checked ({type(exc).__name__} while reading it)"


def _provided_certificate(
    data: Mapping[str, str],
    dns_names: Sequence[str],
    *,
    now: dt.datetime,
) -> tuple[ServingCertificate | None, str | None]:
    raw: dict[str, bytes] = {}
    for key in (CERT_KEY, PRIVATE_KEY, CA_KEY):
        if not data.get(key):
            hint = (
                " (the CA certificate clients verify the server with; cert-manager writes it for "
                "CA and self-signed issuers)"
                if key == CA_KEY
                else ""
            )
            return None, f"it has no {key}{hint}"
        try:
            raw[key] = base64.b64decode(data[key], validate=True)
        except ValueError:
            return None, f"its {key} is not base64"
    try:
        chain = _pem_certificates(raw[CERT_KEY])
    except ValueError:
        return None, "its tls.crt is not a PEM certificate"
    try:
        roots = _pem_certificates(raw[CA_KEY])
    except ValueError:
        return None, "its ca.crt is not a PEM certificate"
    try:
        private = serialization.load_pem_private_key(raw[PRIVATE_KEY], password=None)
    except TypeError:
        return None, "its tls.key is encrypted (Postgres needs an unencrypted key)"
    except ValueError:
        return None, "its tls.key is not a PEM private key"
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if private.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        return None, "its tls.key does not belong to its tls.crt"
    if leaf.not_valid_after_utc < now:
        return None, f"its tls.crt expired at {leaf.not_valid_after_utc.isoformat()}"
    if leaf.not_valid_before_utc > now:
        return None, f"its tls.crt is not valid before {leaf.not_valid_before_utc.isoformat()}"
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        named = sans.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        named = []
    missing = [name for name in dns_names if not any(_name_matches(p, name) for p in named)]
    if missing:
        return None, (
            f"its tls.crt does not name {', '.join(missing)} in its subject alternative names "
            "(every Postgres Service name a client verifies)"
        )
    problem = _chain_problem(leaf, chain[1:], roots, now=now)
    if problem is not None:
        return None, problem
    kept = ServingCertificate(ca_pem=raw[CA_KEY], cert_pem=raw[CERT_KEY], key_pem=raw[PRIVATE_KEY])
    return kept, None


def certificate_summary(cert_pem: bytes) -> str:
    """``serial <hex>, valid until <time>`` of the first certificate in ``cert_pem``."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return f"serial {cert.serial_number:x}, valid until {cert.not_valid_after_utc.isoformat()}"


def not_valid_after(cert_pem: bytes) -> dt.datetime | None:
    """The end of the first certificate in ``cert_pem``; ``None`` when it cannot be read."""
    try:
        return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc
    except ValueError:
        return None
