"""The sync agent's ``/status`` over HTTPS (docs/architecture.md §17), on real TLS: the agent
running as a process (``gocd-ha-operator sync-agent``) serves the certificate the operator issues
from the cluster CA; the operator's reader verifies it fully (CA and Service name) and sends the
token to nothing else: not to a server with another CA, not to a server of the same CA with
another name (the Postgres certificate), not over plain HTTP. A renewed certificate is served
without a restart."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from gocd_ha_operator.api.spec import parse_cluster
from gocd_ha_operator.controller.observe import observe_cluster
from gocd_ha_operator.gocd.client import VerifiedServer, read_sync_agent_status
from gocd_ha_operator.gocd.sync_agent import SyncAgent
from gocd_ha_operator.gocd.token import BCToken
from gocd_ha_operator.kube import certificates
from gocd_ha_operator.kube.endpoints import Endpoint
from gocd_ha_operator.rules.topology import Topology
from tests.support.clusters import CREDENTIALS, cluster_body
from tests.support.ports import free_port
from tests.support.sync_agent import agent_config, agent_running, sync_agent_process
from tests.support.tls import (
    CLUSTER,
    NAMESPACE,
    ServingFiles,
    agent_name,
    recording_https_server,
    write_serving_files,
    write_sync_agent_files,
)

TOKEN = BCToken("gocdha", "tls-test-token-value")


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "business-continuity-token"
    path.write_text(f"{TOKEN.user} = {TOKEN.password}\n")
    return path


@dataclass
class AgentProcess:
    url: str
    port: int
    tls: ServingFiles
    process: subprocess.Popen[str]


@pytest.fixture
def agent_process(
    godata: Path, tmp_path: Path, token_file: Path, agent_tls: ServingFiles
) -> Iterator[AgentProcess]:
    """``gocd-ha-operator sync-agent`` as the pod runs it, on a loopback port."""
    port = free_port()
    target = tmp_path / "shared" / "gocd"
    process = sync_agent_process(godata, target, token_file, port, "a", agent_tls)
    try:
        deadline = time.monotonic() + 30
        while not (target / "manifest.json").exists() or not _listening(port):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the agent did not start"
            time.sleep(0.05)
        yield AgentProcess(f"https://127.0.0.1:{port}", port, agent_tls, process)
    finally:
        process.terminate()
        try:
            process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def served_certificate(port: int, ca_pem: bytes, name: str) -> tuple[x509.Certificate, str]:
    """The certificate and TLS version a verifying client gets from ``127.0.0.1:port``."""
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der), str(tls.version())


async def test_the_operator_reads_the_agent_process_over_verified_https(
    agent_process: AgentProcess,
) -> None:
    reading = await read_sync_agent_status(
        agent_process.url, TOKEN, verify=agent_process.tls.verification(), max_age_seconds=60
    )
    assert (reading["mode"], reading["reason"], reading["synced"]) == ("Cold", "Synced", True)
    assert reading["source"] == f"{agent_process.url}/status"
    cert, version = served_certificate(agent_process.port, agent_process.tls.ca_pem, agent_name())
    assert version in {"TLSv1.2", "TLSv1.3"}
    assert cert.serial_number == agent_process.tls.serial()
    # Side b's Service name is on the same certificate: the agent moves with the primary.
    served_certificate(agent_process.port, agent_process.tls.ca_pem, agent_name("b"))


async def test_plain_http_is_not_served_and_never_sent(agent_process: AgentProcess) -> None:
    plain = agent_process.url.replace("https://", "http://")
    headers = {"Authorization": TOKEN.basic_auth_header()}
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(f"{plain}/status", headers=headers) as response:
                pytest.fail(f"plain HTTP answered {response.status}")
    # The operator's reader refuses a plain URL before connecting: a plain server hears nothing.
    async with recording_https_server(None) as listener:
        with pytest.raises(ValueError, match="HTTPS only"):
            await read_sync_agent_status(
                listener.url, TOKEN, verify=agent_process.tls.verification(), max_age_seconds=60
            )
        # An agent of an older operator (plain HTTP) dialled over HTTPS: no handshake, no token.
        https_to_plain = listener.url.replace("http://", "https://")
        reading = await read_sync_agent_status(
            https_to_plain, TOKEN, verify=agent_process.tls.verification(), max_age_seconds=60
        )
        assert reading["reason"] == "Unreachable"
        assert "TLS handshake failed" in reading["message"]
        assert listener.requests == []
    # And the agent still serves HTTPS after the plain attempt.
    reading = await read_sync_agent_status(
        agent_process.url, TOKEN, verify=agent_process.tls.verification(), max_age_seconds=60
    )
    assert reading["reason"] == "Synced"


@pytest.mark.parametrize("impostor", ["another CA", "the Postgres certificate of the same CA"])
async def test_a_server_the_operator_cannot_verify_never_gets_the_token(
    impostor: str, tmp_path: Path, agent_tls: ServingFiles
) -> None:
    if impostor == "another CA":
        # The right names, signed by a CA that is not the cluster's.
        files = write_sync_agent_files(tmp_path / "impostor")
    else:
        # The cluster's own CA, but a certificate for the Postgres Services (what a pod holding
        # the Postgres key could present): the name the operator dials is not on it.
        names = certificates.postgres_dns_names(CLUSTER, NAMESPACE)
        files = write_serving_files(tmp_path / "impostor", names, ca=agent_tls.ca)
    async with recording_https_server(files.server_context()) as listener:
        reading = await read_sync_agent_status(
            listener.url, TOKEN, verify=agent_tls.verification(), max_age_seconds=60
        )
        assert listener.requests == [], "the impostor was sent a request"
    assert (reading["reason"], reading["synced"], reading["files"]) == (
        "CertificateRejected",
        False,
        [],
    )
    assert "failed verification for ci-gocd-a.build.svc" in reading["message"]
    assert "the token was not sent" in reading["message"]
    assert TOKEN.password not in str(reading)


async def test_the_agent_is_refused_under_a_name_it_does_not_carry(
    agent_process: AgentProcess,
) -> None:
    wrong = VerifiedServer(agent_process.tls.ca_pem, f"{CLUSTER}-pg-a.{NAMESPACE}.svc")
    reading = await read_sync_agent_status(
        agent_process.url, TOKEN, verify=wrong, max_age_seconds=60
    )
    assert reading["reason"] == "CertificateRejected"
    assert "Hostname mismatch" in reading["message"] or "match" in reading["message"]


@pytest.fixture
async def agent_in_process(
    godata: Path, tmp_path: Path, token_file: Path, agent_tls: ServingFiles
) -> AsyncIterator[SyncAgent]:
    config = agent_config(godata, tmp_path / "mirror", token_file, agent_tls)
    async with agent_running(config) as agent:
        yield agent


async def _wait(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within 10 s")


async def test_a_renewed_certificate_is_served_without_a_restart(
    agent_in_process: SyncAgent, agent_tls: ServingFiles, caplog: pytest.LogCaptureFixture
) -> None:
    agent, port = agent_in_process, agent_in_process.port
    assert port is not None
    first = agent_tls.serial()
    # The handshake runs in a thread: this test's loop is the agent's.
    served = await asyncio.to_thread(served_certificate, port, agent_tls.ca_pem, agent_name())
    assert served[0].serial_number == first
    # The operator renewed the Secret (same CA, new key); the kubelet replaced the files.
    renewed = write_sync_agent_files(agent_tls.cert_file.parent, ca=agent_tls.ca).serial()
    assert renewed != first
    await _wait(lambda: agent.tls.reloads == 1, "reload")
    cert, _ = await asyncio.to_thread(served_certificate, port, agent_tls.ca_pem, agent_name())
    assert cert.serial_number == renewed
    reading = await read_sync_agent_status(
        f"https://127.0.0.1:{port}", TOKEN, verify=agent_tls.verification(), max_age_seconds=60
    )
    assert reading["reason"] == "Synced"

    # Files caught mid-update: a new certificate beside the previous key. Not loaded, and the
    # endpoint keeps serving the current pair (never a certificate without its key).
    caplog.set_level(logging.WARNING, logger="gocd_ha_operator.gocd.sync_agent")
    third = certificates.issue_server_certificate(
        agent_tls.ca,
        certificates.sync_agent_dns_names(CLUSTER, NAMESPACE),
        now=dt.datetime.now(dt.UTC),
    )
    agent_tls.cert_file.write_bytes(third.cert_pem)
    await _wait(lambda: "keeping the TLS certificate in use" in caplog.text, "the warning")
    assert agent.tls.reloads == 1
    cert, _ = await asyncio.to_thread(served_certificate, port, agent_tls.ca_pem, agent_name())
    assert cert.serial_number == renewed
    assert "PRIVATE KEY" not in caplog.text
    # Its key arrives: the pair loads and is served.
    agent_tls.key_file.write_bytes(third.key_pem)
    await _wait(lambda: agent.tls.reloads == 2, "the second reload")
    cert, _ = await asyncio.to_thread(served_certificate, port, agent_tls.ca_pem, agent_name())
    assert cert.serial_number == certificates.serial_number(third.cert_pem)


def test_the_agent_does_not_start_without_a_usable_certificate(
    godata: Path,
    tmp_path: Path,
    token_file: Path,
    agent_tls: ServingFiles,
    cli_main: Callable[[list[str]], int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = [
        "sync-agent",
        "--source",
        str(godata),
        "--target",
        str(tmp_path / "t"),
        "--token-file",
        str(token_file),
        "--listen",
        "127.0.0.1:0",
    ]
    with pytest.raises(SystemExit) as info:  # no plain-HTTP mode to fall back to
        cli_main(base)
    assert info.value.code == 2
    assert "--tls-cert-file" in capsys.readouterr().err
    stray = write_serving_files(tmp_path / "stray", ["x.invalid"])
    code = cli_main(
        [*base, "--tls-cert-file", str(agent_tls.cert_file), "--tls-key-file", str(stray.key_file)]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"cannot load the TLS certificate {agent_tls.cert_file}" in err
    assert "PRIVATE KEY" not in err
    code = cli_main(
        [*base, "--tls-cert-file", str(tmp_path / "missing.crt"), "--tls-key-file", "k"]
    )
    assert code == 2
    assert "missing.crt" in capsys.readouterr().err


async def test_the_supervisors_observation_verifies_the_primary_sides_agent(
    agent_process: AgentProcess, tmp_path: Path
) -> None:
    """``observe_cluster`` as the supervisor calls it: the agent's Service resolved to a local
    address (``GOCDHA_ENDPOINTS``), verified as ``ci-gocd-a.build.svc`` with the cluster CA."""
    cluster = parse_cluster(cluster_body(name=CLUSTER, namespace=NAMESPACE))
    assert cluster.spec.gocd.effective_standby_mode == "Cold"
    closed = Endpoint("127.0.0.1", 9)  # nothing listens: Postgres and health are not the point
    overrides = {
        f"{NAMESPACE}/{service}:{port}": closed
        for service, port in [("ci-pg-a", 5432), ("ci-pg-b", 5432), ("ci-gocd-a", 8153)]
    }
    overrides[f"{NAMESPACE}/ci-gocd-a:8155"] = Endpoint("127.0.0.1", agent_process.port)
    credentials = dataclasses.replace(CREDENTIALS, bc_token=f"{TOKEN.user} = {TOKEN.password}\n")

    async def observe(ca_pem: bytes | None) -> dict[str, Any]:
        observation = await observe_cluster(
            cluster,
            credentials,
            Topology(primary="a"),
            now=dt.datetime.now(dt.UTC),
            operator_image="unused",
            overrides=overrides,
            ca_pem=ca_pem,
        )
        assert observation.config_sync is not None
        return dict(observation.config_sync)

    reading = await observe(agent_process.tls.ca_pem)
    assert (reading["reason"], reading["synced"]) == ("Synced", True)
    assert reading["source"] == f"https://127.0.0.1:{agent_process.port}/status"
    # Another cluster's CA: refused, nothing sent.
    other = await observe(write_sync_agent_files(tmp_path / "other").ca_pem)
    assert other["reason"] == "CertificateRejected"
    # No CA known yet (its Secret unreadable): not dialled at all.
    unknown = await observe(None)
    assert unknown["reason"] == "Unreachable"
    assert "no CA certificate to verify the sync agent with (Secret ci-ca)" in unknown["message"]


async def test_an_unreachable_agent_is_described_the_same_at_every_observation() -> None:
    """The reading is written to status (``configSync.message``, ``ConfigSynced``): it must
    not name anything that differs between two observations of the same refusal. aiohttp's
    connection error names the TLS context by its memory address; with more clusters than
    the contexts kept (one per CA), every observation built a new one and wrote status again
    (issue #16: idle status writes with 20 clusters)."""
    port = free_port()  # nobody listens: the connection is refused
    url = f"https://127.0.0.1:{port}"
    now = dt.datetime.now(dt.UTC)
    messages = set()
    for index in range(20):  # more CAs than contexts cached: each read builds one
        ca = certificates.generate_ca(f"ca {index}", now=now)
        verify = VerifiedServer(ca.cert_pem, agent_name("a"))
        reading = await read_sync_agent_status(url, TOKEN, verify=verify, max_age_seconds=60)
        assert reading["reason"] == "Unreachable"
        assert " at 0x" not in reading["message"], reading["message"]
        messages.add(reading["message"])
    assert len(messages) == 1, messages
    assert f"127.0.0.1:{port}" in messages.pop()
