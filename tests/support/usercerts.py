"""User-provided server certificates for tests: what a cert-manager ``Certificate`` with a CA
``Issuer`` writes into its Secret (``tls.crt``, ``tls.key``, ``ca.crt``, type
``kubernetes.io/tls``), made with this project's certificate functions or, for a chain, by hand."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gocd_ha_operator.kube import certificates


def cert_manager_secret(
    name: str,
    namespace: str,
    certificate: certificates.ServingCertificate,
) -> dict[str, Any]:
    """The Secret a cert-manager Certificate named ``name`` keeps ``certificate`` in."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {"cert-manager.io/certificate-name": name},
        },
        "type": "kubernetes.io/tls",
        "data": certificate.secret_data(),
    }


def issue(
    ca: certificates.CertificateAuthority,
    dns_names: Sequence[str],
    *,
    now: dt.datetime,
    validity: dt.timedelta = dt.timedelta(days=90),
) -> certificates.ServingCertificate:
    return certificates.issue_server_certificate(ca, dns_names, now=now, validity=validity)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def with_intermediate(
    root: certificates.CertificateAuthority, dns_names: Sequence[str], *, now: dt.datetime
) -> certificates.ServingCertificate:
    """A server certificate signed by an intermediate CA that ``root`` signed; ``tls.crt`` holds
    the server certificate then the intermediate, ``ca.crt`` the root (as cert-manager writes a
    chain)."""
    root_cert, root_key = root.load()
    middle_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "intermediate")])
    middle = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(root_cert.subject)
        .public_key(middle_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    middle_pem = middle.public_bytes(serialization.Encoding.PEM)
    middle_ca = certificates.CertificateAuthority(
        middle_pem,
        middle_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    leaf = certificates.issue_server_certificate(middle_ca, dns_names, now=now)
    return certificates.ServingCertificate(
        ca_pem=root.cert_pem, cert_pem=leaf.cert_pem + middle_pem, key_pem=leaf.key_pem
    )
