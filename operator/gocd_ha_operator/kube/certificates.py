"""The admission webhook's TLS: a self-signed CA and a serving certificate signed by it.

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


def generate(dns_names: Sequence[str], *, now: dt.datetime) -> ServingCertificate:
    """A new CA and a serving certificate for ``dns_names`` (the first is the common name)."""
    if not dns_names:
        raise ValueError("a serving certificate needs at least one DNS name")
    start = now - dt.timedelta(minutes=5)  # tolerate clocks slightly behind ours
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("gocd-ha-operator webhook CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + VALIDITY)
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
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(dns_names[0]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in dns_names]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ServingCertificate(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def unusable_because(
    certificate: ServingCertificate, dns_names: Sequence[str], *, now: dt.datetime
) -> str | None:
    """Why ``certificate`` cannot be served for ``dns_names`` now; ``None`` when it can."""
    try:
        ca = x509.load_pem_x509_certificate(certificate.ca_pem)
        cert = x509.load_pem_x509_certificate(certificate.cert_pem)
        key = serialization.load_pem_private_key(certificate.key_pem, password=None)
    except ValueError:
        return "it cannot be read"
    if cert.not_valid_after_utc - RENEW_BEFORE < now:
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
