"""The webhook's generated CA and serving certificate (kube/certificates.py)."""

from __future__ import annotations

import datetime as dt
import ssl

import pytest

from gocd_ha_operator.kube import certificates

NOW = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
NAMES = ["hook.ops.svc", "hook.ops.svc.cluster.local"]


@pytest.fixture(scope="module")
def cert() -> certificates.ServingCertificate:
    return certificates.generate(NAMES, now=NOW)


def test_a_fresh_certificate_is_usable_and_loads_into_tls(
    cert: certificates.ServingCertificate,
) -> None:
    assert certificates.unusable_because(cert, NAMES, now=NOW) is None
    context = ssl.create_default_context(cadata=cert.ca_pem.decode())
    assert context.get_ca_certs()[0]["subject"] == (
        (("commonName", "gocd-ha-operator webhook CA"),),
    )


def test_secret_data_round_trip_and_the_key_is_never_shown(
    cert: certificates.ServingCertificate,
) -> None:
    assert certificates.ServingCertificate.from_secret_data(cert.secret_data()) == cert
    assert "PRIVATE" not in repr(cert) and cert.key_pem.decode()[:20] not in repr(cert)
    assert certificates.ServingCertificate.from_secret_data({"ca.crt": "x"}) is None
    broken = cert.secret_data() | {"tls.key": "not base64!"}
    assert certificates.ServingCertificate.from_secret_data(broken) is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("expiring", "it expires soon"),
        ("future", "it is not valid yet"),
        ("other-names", "it does not name the webhook Service"),
        ("other-ca", "the CA did not sign it"),
        ("other-key", "its key does not match"),
        ("garbage", "it cannot be read"),
    ],
)
def test_an_unusable_certificate_says_why(
    cert: certificates.ServingCertificate, change: str, reason: str
) -> None:
    other = certificates.generate(NAMES, now=NOW)
    now, names, candidate = NOW, NAMES, cert
    if change == "expiring":
        now = NOW + certificates.VALIDITY - certificates.RENEW_BEFORE + dt.timedelta(hours=1)
    elif change == "future":
        now = NOW - dt.timedelta(days=1)
    elif change == "other-names":
        names = ["elsewhere.ops.svc"]
    elif change == "other-ca":
        candidate = certificates.ServingCertificate(other.ca_pem, cert.cert_pem, cert.key_pem)
    elif change == "other-key":
        candidate = certificates.ServingCertificate(cert.ca_pem, cert.cert_pem, other.key_pem)
    else:
        candidate = certificates.ServingCertificate(cert.ca_pem, b"garbage", cert.key_pem)
    assert certificates.unusable_because(candidate, names, now=now) == reason


def test_a_certificate_needs_a_name() -> None:
    with pytest.raises(ValueError, match="at least one DNS name"):
        certificates.generate([], now=NOW)
