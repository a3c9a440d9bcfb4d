"""The validating admission webhook: ``kubectl apply`` of an invalid GoCDHACluster fails at once.

It runs the model's whole validation (``parse_cluster``: types, ranges, patterns, Postgres
parameters and the cross-field rules) and, on an update, the immutable-field rules, and refuses
with the same one-line-per-field message the ``Ready`` condition would show.

What it never refuses: an update that leaves ``spec`` as it was (finalizers, annotations such as
``gocdha.io/promote``, labels), and anything on an object being deleted. A resource that became
invalid before the webhook existed can therefore still be promoted, annotated and deleted, and
kopf can still remove its finalizer; only its spec has to become valid before it changes.

TLS: the chart either mounts a cert-manager certificate (``cert_dir``), or lets the operator
generate a self-signed CA and serving certificate into a Secret in its own namespace and put the
CA into the chart's ValidatingWebhookConfiguration (``caBundle``) when it starts.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import kopf

from gocd_ha_operator.api.constants import GROUP, OPERATOR_NAME
from gocd_ha_operator.api.immutability import immutable_problems
from gocd_ha_operator.api.spec import parse_cluster
from gocd_ha_operator.api.validation import SpecError
from gocd_ha_operator.kube import certificates
from gocd_ha_operator.kube.apply import KubeApiError, KubeClient

logger = logging.getLogger(__name__)

#: The webhook's handler id, which is also the URL path the API server posts to (``/<id>``).
WEBHOOK_ID: Final = "validate-gocdhacluster"
WEBHOOK_PATH: Final = f"/{WEBHOOK_ID}"
#: The name of the webhook inside the ValidatingWebhookConfiguration (a DNS name, by API rule).
WEBHOOK_NAME: Final = f"validate.gocdhaclusters.{GROUP}"
#: Longest refusal message: the API server shows it to the user and keeps it in audit logs.
MAX_MESSAGE: Final = 4000


@dataclass(frozen=True)
class WebhookConfig:
    """Where and how the webhook serves. Built by ``run`` from its options."""

    port: int
    #: The Service in front of the operator, ``<service>.<namespace>.svc`` (the certificate's name).
    service: str
    namespace: str
    #: Secret that keeps the generated certificate (ignored when ``cert_dir`` is set).
    secret: str | None = None
    #: ValidatingWebhookConfiguration whose caBundle the operator keeps current (or ``None``).
    configuration: str | None = None
    #: A mounted certificate (``tls.crt``, ``tls.key``, ``ca.crt``), e.g. from cert-manager.
    cert_dir: Path | None = None
    addr: str = "0.0.0.0"  # noqa: S104 - the API server reaches the pod through its Service

    @property
    def dns_names(self) -> list[str]:
        base = f"{self.service}.{self.namespace}.svc"
        return [base, f"{base}.cluster.local"]


# --- The decision ---------------------------------------------------------------------------------


def admission_problems(
    body: Mapping[str, Any], old: Mapping[str, Any] | None, operation: str | None
) -> list[str]:
    """Why the API request must be refused: one line per problem, each naming its field."""
    if operation not in ("CREATE", "UPDATE"):
        return []
    if operation == "UPDATE" and old is not None:
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            return []  # being deleted: kopf must be able to remove its finalizer
        if body.get("spec") == old.get("spec"):
            return []  # metadata or annotations only: never blocked by an old invalid spec
    lines: list[str] = []
    # The status is the operator's (and not writable through this request: the status
    # subresource is on); a status an older operator wrote must not block a user's change.
    spec_only = {key: value for key, value in body.items() if key != "status"}
    try:
        parse_cluster(spec_only)
    except SpecError as exc:
        lines += [str(problem) for problem in exc.problems]
    if operation == "UPDATE" and old is not None:
        lines += [str(problem) for problem in immutable_problems(old, body)]
    return lines


def refusal_message(lines: list[str]) -> str:
    message = "\n".join(lines)
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return message


def register(registry: kopf.OperatorRegistry, resource: tuple[str, str, str]) -> None:
    """Register the validating handler for ``resource`` on ``registry``."""

    @kopf.on.validate(*resource, id=WEBHOOK_ID, registry=registry)
    def validate(body: kopf.Body, subresource: str | None, **kwargs: Any) -> None:
        if subresource:
            return  # status and other subresources are written by the operator only
        old: Mapping[str, Any] | None = kwargs.get("old")
        lines = admission_problems(body, old, kwargs.get("operation"))
        if lines:
            raise kopf.AdmissionError(refusal_message(lines), code=422)


# --- TLS ------------------------------------------------------------------------------------------


def ensure_certificate(
    kube: KubeClient, config: WebhookConfig, *, now: dt.datetime
) -> certificates.ServingCertificate:
    """The certificate kept in the Secret, or a new one written there when it is not usable."""
    if config.secret is None:
        raise ValueError("a generated certificate needs a Secret to keep it in")
    live = kube.get("v1", "Secret", config.namespace, config.secret)
    if live is not None:
        kept = certificates.ServingCertificate.from_secret_data(live.get("data"))
        why = (
            "it is incomplete"
            if kept is None
            else certificates.unusable_because(kept, config.dns_names, now=now)
        )
        if kept is not None and why is None:
            return kept
        logger.info("Replacing the webhook certificate in Secret %s: %s.", config.secret, why)
    fresh = certificates.generate(config.dns_names, now=now)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": config.secret,
            "namespace": config.namespace,
            "labels": {"app.kubernetes.io/managed-by": OPERATOR_NAME},
        },
        "type": "Opaque",
        "data": fresh.secret_data(),
    }
    if live is None:
        kube.create(secret)
    else:
        kube.patch("v1", "Secret", config.namespace, config.secret, {"data": secret["data"]})
    return fresh


def sync_ca_bundle(kube: KubeClient, configuration: str, ca_pem: bytes) -> bool:
    """Put ``ca_pem`` into every webhook of ``configuration``; ``True`` when it had to change."""
    path_kind = ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration")
    live = kube.get(*path_kind, "", configuration)
    if live is None:
        raise KubeApiError(404, "NotFound", f"ValidatingWebhookConfiguration {configuration}")
    bundle = base64.b64encode(ca_pem).decode("ascii")
    webhooks = [dict(w) for w in live.get("webhooks") or []]
    if all((w.get("clientConfig") or {}).get("caBundle") == bundle for w in webhooks):
        return False
    for webhook in webhooks:
        webhook["clientConfig"] = {**(webhook.get("clientConfig") or {}), "caBundle": bundle}
    kube.patch(*path_kind, "", configuration, {"webhooks": webhooks})
    return True


def server(kube: KubeClient, config: WebhookConfig, *, now: dt.datetime) -> kopf.WebhookServer:
    """kopf's HTTPS server for the webhook, with the certificate in place (and the CA published)."""
    if config.cert_dir is not None:
        return kopf.WebhookServer(
            addr=config.addr,
            port=config.port,
            certfile=str(config.cert_dir / certificates.CERT_KEY),
            pkeyfile=str(config.cert_dir / certificates.PRIVATE_KEY),
            cafile=str(config.cert_dir / certificates.CA_KEY),
        )
    certificate = ensure_certificate(kube, config, now=now)
    if config.configuration is not None and sync_ca_bundle(
        kube, config.configuration, certificate.ca_pem
    ):
        logger.info("Published the webhook CA in %s.", config.configuration)
    directory = Path(tempfile.mkdtemp(prefix="gocdha-webhook-"))
    cert_file = directory / certificates.CERT_KEY
    key_file = directory / certificates.PRIVATE_KEY
    cert_file.write_bytes(certificate.cert_pem)
    key_file.touch(mode=0o600)
    key_file.write_bytes(certificate.key_pem)
    os.chmod(key_file, 0o600)
    return kopf.WebhookServer(
        addr=config.addr,
        port=config.port,
        certfile=str(cert_file),
        pkeyfile=str(key_file),
        cadata=certificate.ca_pem,
    )
