"""The Cold sync agent's HTTPS (docs/architecture.md §17): its certificate Secret, kept by the
operator like the Postgres one, and what each container of the GoCD pods mounts of it. The agent
serving it and the operator verifying it are in tests/gocd/test_gocd_sync_agent_tls.py."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from typing import Any, cast

from cryptography import x509

from gocd_ha_operator.api.spec import parse_cluster
from gocd_ha_operator.builders import BuildInputs, build_children
from gocd_ha_operator.builders.gocd import build_gocd_deployment
from gocd_ha_operator.cli.render import render_cluster
from gocd_ha_operator.controller.tls import ensure_certificates, serving_secrets
from gocd_ha_operator.kube import certificates
from gocd_ha_operator.kube.apply import KubeClient
from tests.support.memkube import MemoryKube

NOW = dt.datetime(2026, 12, 2, 4, 0, tzinfo=dt.UTC)
OWNER = {
    "apiVersion": "gocdha.io/v1alpha1",
    "kind": "GoCDHACluster",
    "metadata": {"name": "ci", "namespace": "build", "uid": "u-1"},
}
WARM: dict[str, Any] = {"gocd": {"image": "gocd/gocd-server:v21.2.0"}}
GOCD_SIDE_NAMES = [
    f"ci-gocd-{side}{suffix}"
    for side in "ab"
    for suffix in ("", ".build", ".build.svc", ".build.svc.cluster.local")
]
Body = Callable[..., dict[str, Any]]
Inputs = Callable[..., BuildInputs]


def dns_names(cert_pem: bytes) -> list[str]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sorted(sans.get_values_for_type(x509.DNSName))


def secret_pem(kube: MemoryKube, name: str, key: str) -> bytes:
    return base64.b64decode(kube.objects[("Secret", "build", name)]["data"][key])


def test_cold_mode_gets_a_second_certificate_for_the_gocd_side_services_only(body: Body) -> None:
    cold = parse_cluster(body())
    assert [s.name for s in serving_secrets(cold)] == ["ci-server-tls", "ci-sync-agent-tls"]
    assert [s.name for s in serving_secrets(parse_cluster(body(WARM)))] == ["ci-server-tls"]
    kube = MemoryKube()
    ca_pem = ensure_certificates(cast(KubeClient, kube), OWNER, cold, now=NOW)
    assert ca_pem is not None
    agent = kube.objects[("Secret", "build", "ci-sync-agent-tls")]
    assert agent["type"] == "kubernetes.io/tls"
    assert sorted(agent["data"]) == ["ca.crt", "tls.crt", "tls.key"]
    assert agent["metadata"]["labels"]["app.kubernetes.io/component"] == "gocd-server"
    assert agent["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    agent_cert = secret_pem(kube, "ci-sync-agent-tls", "tls.crt")
    # What the operator dials (ci-gocd-<side>.build.svc:8155), and nothing a Postgres client
    # dials: the GoCD pod's key is no good for impersonating Postgres, and the other way round.
    assert dns_names(agent_cert) == sorted(GOCD_SIDE_NAMES)
    postgres_names = dns_names(secret_pem(kube, "ci-server-tls", "tls.crt"))
    assert not set(postgres_names) & set(GOCD_SIDE_NAMES)
    # The same CA: one ca.crt verifies both.
    assert secret_pem(kube, "ci-sync-agent-tls", "ca.crt") == ca_pem
    issuer = x509.load_pem_x509_certificate(ca_pem)
    x509.load_pem_x509_certificate(agent_cert).verify_directly_issued_by(issuer)


def test_a_warm_cluster_gets_no_sync_agent_certificate(body: Body) -> None:
    kube = MemoryKube()
    ensure_certificates(cast(KubeClient, kube), OWNER, parse_cluster(body(WARM)), now=NOW)
    assert [w[2] for w in kube.writes] == ["ci-ca", "ci-server-tls"]


def test_a_sync_agent_certificate_without_a_side_service_name_is_replaced(body: Body) -> None:
    kube = MemoryKube()
    client, cluster = cast(KubeClient, kube), parse_cluster(body())
    ensure_certificates(client, OWNER, cluster, now=NOW)
    ca = certificates.CertificateAuthority.from_secret_data(
        kube.objects[("Secret", "build", "ci-ca")]["data"]
    )
    assert ca is not None
    # Someone put a certificate for side a only into the Secret: side b's name is missing.
    narrow = certificates.issue_server_certificate(ca, GOCD_SIDE_NAMES[:4], now=NOW)
    kube.objects[("Secret", "build", "ci-sync-agent-tls")]["data"] = narrow.secret_data()
    kept = certificates.ServingCertificate.from_secret_data(narrow.secret_data())
    assert kept is not None
    assert (
        certificates.server_certificate_problem(
            kept, ca, GOCD_SIDE_NAMES, now=NOW, services="GoCD side"
        )
        == "it does not name every GoCD side Service"
    )
    writes = len(kube.writes)
    ensure_certificates(client, OWNER, cluster, now=NOW + dt.timedelta(hours=1))
    assert kube.writes[writes:] == [("patch", "Secret", "ci-sync-agent-tls")]
    assert dns_names(secret_pem(kube, "ci-sync-agent-tls", "tls.crt")) == sorted(GOCD_SIDE_NAMES)


def test_the_periodic_check_does_not_create_the_sync_agent_certificate(body: Body) -> None:
    """A cluster moved from Warm to Cold gets the Secret from the reconcile (which runs before
    the Deployment that mounts it is applied), never from the supervisor's check."""
    kube = MemoryKube()
    client = cast(KubeClient, kube)
    ensure_certificates(client, OWNER, parse_cluster(body(WARM)), now=NOW)
    writes = len(kube.writes)
    ensure_certificates(client, OWNER, parse_cluster(body()), now=NOW, create=False)
    assert kube.writes[writes:] == []
    ensure_certificates(client, OWNER, parse_cluster(body()), now=NOW)
    assert kube.writes[writes:] == [("create", "Secret", "ci-sync-agent-tls")]


def _mounts_of(pod: dict[str, Any], volume: str) -> list[str]:
    return [
        container["name"]
        for container in [*pod.get("initContainers", []), *pod["containers"]]
        if any(mount["name"] == volume for mount in container.get("volumeMounts", []))
    ]


def test_only_the_sync_agent_container_mounts_its_certificate_and_key(inputs: Inputs) -> None:
    pod = build_gocd_deployment(inputs(primary="a"), "a")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["sync-agent-tls"]["secret"] == {
        "secretName": "ci-sync-agent-tls",
        "defaultMode": 0o440,
        "items": [
            {"key": "tls.crt", "path": "tls.crt"},
            {"key": "tls.key", "path": "tls.key"},
        ],
    }
    assert _mounts_of(pod, "sync-agent-tls") == ["sync-agent"]
    agent = next(c for c in pod["containers"] if c["name"] == "sync-agent")
    mount = next(m for m in agent["volumeMounts"] if m["name"] == "sync-agent-tls")
    # A directory mount (no subPath): the kubelet replaces renewed files in the running pod.
    assert mount == {
        "name": "sync-agent-tls",
        "mountPath": "/var/run/gocdha/sync-agent-tls",
        "readOnly": True,
    }
    command = agent["command"]
    assert command[command.index("--tls-cert-file") + 1] == "/var/run/gocdha/sync-agent-tls/tls.crt"
    assert command[command.index("--tls-key-file") + 1] == "/var/run/gocdha/sync-agent-tls/tls.key"
    assert agent["securityContext"]["readOnlyRootFilesystem"] is True


def test_no_other_pod_mounts_the_sync_agent_certificate(inputs: Inputs) -> None:
    for built in (inputs(primary="a"), inputs(primary="b"), inputs(WARM)):
        for child in build_children(built):
            pod = child.get("spec", {}).get("template", {}).get("spec", {})
            secrets = {v.get("secret", {}).get("secretName") for v in pod.get("volumes", [])}
            primary_gocd = child["metadata"]["name"] == f"ci-gocd-{built.topology.primary}"
            cold = built.cluster.spec.gocd.effective_standby_mode == "Cold"
            expected = child["kind"] == "Deployment" and primary_gocd and cold
            assert ("ci-sync-agent-tls" in secrets) == expected, child["metadata"]["name"]
            assert "ci-ca" not in secrets


def test_render_prints_the_sync_agent_secret_in_cold_mode_only(body: Body) -> None:
    def secrets(spec: dict[str, Any] | None) -> set[str]:
        children = render_cluster(parse_cluster(body(spec)), primary=None, operator_image="i:t")
        return {c["metadata"]["name"] for c in children if c["kind"] == "Secret"}

    assert "ci-sync-agent-tls" in secrets(None)
    assert "ci-sync-agent-tls" not in secrets(WARM)
