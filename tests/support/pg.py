"""Real Postgres instances on loopback, started by the project's own entrypoint.

A :class:`PgCluster` is what one ``GoCDHACluster`` becomes, minus Kubernetes: a config directory
laid out like the ``<name>-postgres`` ConfigMap (rendered by
:mod:`gocd_ha_operator.postgres.config`, plus the scripts), a credentials directory laid out like
the mounted Secrets, a shared WAL archive, and
two :class:`PgInstance` sides ``a`` and ``b`` on free loopback ports.

Postgres refuses to run as root, and tests and CI run as root: every Postgres process is started
through ``runuser -u postgres``, in its own session so that :meth:`PgInstance.kill` and
:meth:`PgCluster.close` can take down the whole process tree. Everything lives under one temporary
directory that :meth:`PgCluster.close` removes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gocd_ha_operator.api.constants import (
    CM_ARCHIVE_WAL,
    CM_CLEANUP_WAL,
    CM_ENTRYPOINT,
    CM_PG_HBA_CONF,
    CM_POSTGRESQL_CONF,
    CM_RECOVER,
    CM_RESTORE_WAL,
    ENV_ARCHIVE_DIR,
    ENV_CONFIG_DIR,
    ENV_DATABASE,
    ENV_GOCD_PASSWORD_FILE,
    ENV_OPERATOR_PASSWORD_FILE,
    ENV_PEER_HOST,
    ENV_PEER_HOSTADDR,
    ENV_PEER_PORT,
    ENV_PG_BINDIR,
    ENV_PORT,
    ENV_REPLICATION_PASSWORD_FILE,
    ENV_ROLE,
    ENV_SCRIPTS_DIR,
    ENV_SIDE,
    ENV_SOCKET_DIR,
    ENV_SUPERUSER_PASSWORD_FILE,
    ENV_TLS_SECRET_DIR,
    SUPERUSER_NAME,
    Side,
    other_side,
)
from gocd_ha_operator.kube import certificates
from gocd_ha_operator.kube.endpoints import Endpoint
from gocd_ha_operator.kube.names import ChildNames
from gocd_ha_operator.local.process import find_pg_bindir
from gocd_ha_operator.postgres import config as pgconfig
from gocd_ha_operator.postgres.client import ClientTLS, PostgresClient
from tests.support.ports import free_port

SCRIPTS_DIR = Path(pgconfig.__file__).parent / "scripts"
OS_USER = "postgres"
LOOPBACK = "127.0.0.1"
#: The cluster and namespace the test certificates name: clients verify ``ci-pg-a.pgtest.svc``
#: (connecting to 127.0.0.1 through libpq's ``hostaddr``), as in a cluster.
TLS_CLUSTER = "ci"
TLS_NAMESPACE = "pgtest"


def unavailable_reason() -> str | None:
    """Why real-Postgres tests cannot run here, or None when they can."""
    bindir = find_pg_bindir()
    if bindir is None or not (bindir / "postgres").exists():
        return "no PostgreSQL server binaries (install postgresql-15, see .ci/run)"
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        return f"no OS user {OS_USER!r} to run Postgres as (see .ci/run)"
    if shutil.which("runuser") is None and os.geteuid() == 0:
        return "runuser is missing"
    return None


def tree_digest(path: Path) -> str:
    """A digest of every name, mode and byte under ``path``: equal digests = untouched tree."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files) + [f"{d}/" for d in dirs]:
            full = Path(root) / name.rstrip("/")
            info = full.lstat()
            digest.update(f"{full.relative_to(path)}:{stat.filemode(info.st_mode)}\n".encode())
            if stat.S_ISREG(info.st_mode):
                digest.update(full.read_bytes())
    return digest.hexdigest()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _password() -> str:
    # Characters that need escaping in SQL literals, .pgpass and conninfo: the entrypoint must
    # cope with all of them.
    return secrets.token_urlsafe(12) + ":\\'\" $x"


@dataclass(frozen=True)
class Passwords:
    superuser: str
    replication: str
    operator: str
    gocd: str

    @classmethod
    def generate(cls) -> Passwords:
        return cls(_password(), _password(), _password(), _password())


@dataclass(frozen=True)
class EntrypointRun:
    """Result of an entrypoint run that was expected to exit by itself."""

    returncode: int
    output: str


class PgInstance:
    """One side: its data dir, socket dir, port and (when started) its entrypoint process."""

    def __init__(self, cluster: PgCluster, side: Side) -> None:
        self.cluster = cluster
        self.side: Side = side
        self.port = free_port()
        self.home = cluster.root / side
        self.pgdata = self.home / "data" / "pgdata"
        self.socket_dir = self.home / "run"
        self.log_path = self.home / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        for directory in (self.home, self.pgdata.parent, self.socket_dir):
            directory.mkdir(parents=True, exist_ok=True)
            cluster.give_to_postgres(directory)

    def __repr__(self) -> str:
        return f"PgInstance(side={self.side}, port={self.port})"

    @property
    def peer(self) -> PgInstance:
        return self.cluster.side(other_side(self.side))

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(LOOPBACK, self.port)

    @property
    def server_name(self) -> str:
        """The instance Service's DNS name: what its certificate names and clients verify."""
        service = ChildNames(self.cluster.tls_cluster).postgres_instance_service(self.side)
        return f"{service}.{self.cluster.tls_namespace}.svc"

    def tls_params(self, server_name: str | None = None) -> dict[str, Any]:
        """libpq parameters of a fully verified TLS connection to this instance over TCP."""
        return {
            "host": server_name or self.server_name,
            "hostaddr": LOOPBACK,
            "port": self.port,
            "sslmode": "verify-full",
            "sslrootcert": str(self.cluster.ca_file),
        }

    def env(self, role: str, overrides: Mapping[str, str | None] | None = None) -> dict[str, str]:
        """The entrypoint's environment, as the StatefulSet of this side would set it."""
        cluster = self.cluster
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "PGDATA": str(self.pgdata),
            ENV_PG_BINDIR: str(cluster.bindir),
            ENV_SIDE: self.side,
            ENV_ROLE: role,
            ENV_PEER_HOST: self.peer.server_name,
            ENV_PEER_HOSTADDR: LOOPBACK,
            ENV_PEER_PORT: str(self.peer.port),
            ENV_TLS_SECRET_DIR: str(cluster.tls_secret_dir),
            ENV_PORT: str(self.port),
            "GOCDHA_LISTEN_ADDRESSES": LOOPBACK,
            "GOCDHA_WAIT_PRIMARY_SECONDS": "60",
            ENV_ARCHIVE_DIR: str(cluster.archive_dir),
            ENV_CONFIG_DIR: str(cluster.config_dir),
            ENV_SCRIPTS_DIR: str(cluster.config_dir),
            ENV_SOCKET_DIR: str(self.socket_dir),
            ENV_DATABASE: cluster.database,
            ENV_SUPERUSER_PASSWORD_FILE: str(cluster.password_file("superuser")),
            ENV_REPLICATION_PASSWORD_FILE: str(cluster.password_file("replication")),
            ENV_OPERATOR_PASSWORD_FILE: str(cluster.password_file("operator")),
            ENV_GOCD_PASSWORD_FILE: str(cluster.password_file("gocd")),
        }
        for key, value in (overrides or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def _command(self) -> list[str]:
        entrypoint = str(self.cluster.config_dir / CM_ENTRYPOINT)
        if os.geteuid() == 0:
            return ["runuser", "-u", OS_USER, "--", "bash", entrypoint]
        return ["bash", entrypoint]

    # --- lifecycle ------------------------------------------------------------------------------

    def start(
        self,
        role: str,
        *,
        wait: bool = True,
        timeout: float = 90,
        env: Mapping[str, str | None] | None = None,
    ) -> None:
        """Run the entrypoint in the background; with ``wait``, until Postgres accepts queries.

        ``env`` overrides the default environment; a ``None`` value removes the variable.
        """
        if self.running:
            raise RuntimeError(f"{self} is already running")
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start role={role} at {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self._command(),
                # Postgres changes back into its working directory at start; the caller's may be
                # one the unprivileged user cannot enter (a 0700 checkout), its own home it can.
                cwd=self.home,
                env=self.env(role, env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_ready(timeout=timeout)

    def run_entrypoint(
        self, role: str, *, timeout: float = 60, env: Mapping[str, str | None] | None = None
    ) -> EntrypointRun:
        """Run the entrypoint in the foreground for a case where it must exit by itself."""
        self.start(role, wait=False, env=env)
        assert self.process is not None
        offset = self.log_path.stat().st_size
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"entrypoint of {self} did not exit within {timeout}s:\n{self.log_tail()}"
            ) from None
        self.process = None
        return EntrypointRun(code, self.log_text()[offset - 200 if offset > 200 else 0 :])

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def postmaster_pid(self) -> int | None:
        pid_file = self.pgdata / "postmaster.pid"
        try:
            return int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def wait_ready(self, timeout: float = 90) -> None:
        """Until the superuser can run a query over the socket; fails early if the process died."""
        deadline = time.monotonic() + timeout
        last_error = ""
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"{self} exited with {self.process.returncode} before it was ready:\n"
                    f"{self.log_tail()}"
                )
            try:
                with self.connect(connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.Error as exc:
                last_error = str(exc)
            time.sleep(0.2)
        raise AssertionError(
            f"{self} not ready within {timeout}s ({last_error}):\n{self.log_tail()}"
        )

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        """Shut Postgres down (``fast`` = SIGINT, ``smart`` = SIGTERM, ``immediate`` = SIGQUIT)."""
        if not self.running:
            self.process = None
            return
        signals = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
        pid = self.postmaster_pid()
        assert self.process is not None
        try:
            if pid is not None:
                os.kill(pid, signals[mode])
            else:
                os.killpg(self.process.pid, signals[mode])
            self.process.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            self.kill()
        self.process = None

    def kill(self) -> None:
        """SIGKILL the whole process tree: a crash, as abrupt as a node loss."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
            self.process = None
        # A postmaster whose group was left (never happens with Postgres, but be sure).
        pid = self.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    # --- access ---------------------------------------------------------------------------------

    def connect(
        self, dbname: str = "postgres", *, connect_timeout: int = 5, **kwargs: Any
    ) -> psycopg.Connection[Any]:
        """A superuser connection over the unix socket (autocommit)."""
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=SUPERUSER_NAME,
            password=self.cluster.passwords.superuser,
            dbname=dbname,
            connect_timeout=connect_timeout,
            autocommit=True,
            **kwargs,
        )

    def gocd_connect(self, *, connect_timeout: int = 5) -> psycopg.Connection[Any]:
        """GoCD's own connection: the gocd user over TCP with TLS verified against the Service
        name and the cluster CA, as db.properties configures it."""
        return psycopg.connect(
            **self.tls_params(),
            user="gocd",
            password=self.cluster.passwords.gocd,
            dbname=self.cluster.database,
            autocommit=True,
            connect_timeout=connect_timeout,
        )

    def query(self, sql: str, *params: Any) -> Any:
        """First column of the first row of ``sql`` run as superuser (None without rows)."""
        with self.connect() as conn:
            cursor = conn.execute(sql, params or None)
            if cursor.description is None:  # a command without a result (ALTER, CHECKPOINT…)
                return None
            row = cursor.fetchone()
            return None if row is None else row[0]

    def client(self, **options: Any) -> PostgresClient:
        """The operator's client for this instance, as the operator role over TCP."""
        return PostgresClient(
            self.endpoint,
            password=self.cluster.passwords.operator,
            tls=ClientTLS(self.server_name, str(self.cluster.ca_file)),
            **options,
        )

    def in_recovery(self) -> bool:
        return bool(self.query("SELECT pg_is_in_recovery()"))

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class PgCluster:
    """Config, credentials, archive and the two sides of one test cluster."""

    def __init__(
        self,
        *,
        parameters: Mapping[str, str] | None = None,
        synchronous: bool = False,
        database: str = "gocd",
        archive_dir: Path | None = None,
        tls_cluster: str = TLS_CLUSTER,
        tls_namespace: str = TLS_NAMESPACE,
    ) -> None:
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        bindir = find_pg_bindir()
        assert bindir is not None
        self.bindir = bindir
        self.database = database
        self.passwords = Passwords.generate()
        self.root = Path(tempfile.mkdtemp(prefix="gocdha-pg-", dir="/tmp"))
        self.root.chmod(0o755)
        self.config_dir = self.root / "config"
        self.secrets_dir = self.root / "secrets"
        self.archive_dir = archive_dir or self.root / "shared" / "wal"
        self._render_config(parameters or {}, synchronous)
        self._write_secrets()
        # The cluster and namespace the server certificate names (as the operator issues it).
        self.tls_cluster, self.tls_namespace = tls_cluster, tls_namespace
        self.tls_secret_dir = self.root / "tls-secret"
        self.ca_file = self.root / "ca.crt"
        self.ca = certificates.generate_ca("gocdha test CA", now=_utcnow())
        self.write_server_certificate()
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        self.give_to_postgres(self.archive_dir)
        self.a = PgInstance(self, "a")
        self.b = PgInstance(self, "b")

    def side(self, side: Side) -> PgInstance:
        return self.a if side == "a" else self.b

    @staticmethod
    def give_to_postgres(path: Path) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(OS_USER)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _render_config(self, parameters: Mapping[str, str], synchronous: bool) -> None:
        # The ConfigMap's keys, one file each, as Kubernetes mounts them (read-only to Postgres).
        self.config_dir.mkdir()
        files = {
            CM_POSTGRESQL_CONF: pgconfig.render_postgresql_conf(
                parameters=parameters, synchronous=synchronous
            ),
            CM_PG_HBA_CONF: pgconfig.render_pg_hba(database=self.database),
        }
        for name in (CM_ENTRYPOINT, CM_ARCHIVE_WAL, CM_RESTORE_WAL, CM_CLEANUP_WAL, CM_RECOVER):
            files[name] = (SCRIPTS_DIR / name).read_text()
        for name, text in files.items():
            path = self.config_dir / name
            path.write_text(text)
            path.chmod(0o644)

    def password_file(self, role: str) -> Path:
        return self.secrets_dir / role / "password"

    def _write_secrets(self) -> None:
        for role in ("superuser", "replication", "operator", "gocd"):
            path = self.password_file(role)
            path.parent.mkdir(parents=True)
            path.write_text(getattr(self.passwords, role))
            path.chmod(0o400)
            self.give_to_postgres(path)

    def write_server_certificate(
        self, ca: certificates.CertificateAuthority | None = None
    ) -> certificates.ServingCertificate:
        """A new server certificate for every Service name, in the directory both instances
        mount as their certificate Secret (as the operator writes ``<name>-server-tls``), with
        atomic replaces like the kubelet's; the CA file clients use is rewritten too."""
        ca = ca or self.ca
        issued = certificates.issue_server_certificate(
            ca,
            certificates.postgres_dns_names(self.tls_cluster, self.tls_namespace),
            now=_utcnow(),
        )
        self.tls_secret_dir.mkdir(exist_ok=True)
        self.give_to_postgres(self.tls_secret_dir)
        files = {"tls.crt": issued.cert_pem, "tls.key": issued.key_pem, "ca.crt": ca.cert_pem}
        for name, content in files.items():
            temporary = self.tls_secret_dir / f".{name}.new"
            temporary.write_bytes(content)
            temporary.chmod(0o400)
            self.give_to_postgres(temporary)
            temporary.replace(self.tls_secret_dir / name)
        self.ca_file.write_bytes(ca.cert_pem)
        self.ca_file.chmod(0o644)
        return issued

    def write_file(self, path: Path, text: str, mode: int = 0o600) -> Path:
        """A file the postgres user owns (for credential variants in tests)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        self.give_to_postgres(path)
        return path

    def start_pair(self, primary: Side = "a") -> tuple[PgInstance, PgInstance]:
        """A primary on ``primary`` and a streaming standby on the other side, both ready."""
        first = self.side(primary)
        second = first.peer
        first.start("primary")
        second.start("standby")
        wait_until(lambda: streaming(first, second.side), timeout=60, what="standby streaming")
        return first, second

    def archived_files(self) -> list[str]:
        return sorted(p.name for p in self.archive_dir.iterdir() if not p.name.startswith("."))

    def close(self) -> None:
        """Kill every process of the cluster and remove its directory."""
        for instance in (self.a, self.b):
            instance.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def streaming(primary: PgInstance, standby_side: Side) -> bool:
    """Whether ``primary`` has a walsender in state ``streaming`` to ``standby_side``."""
    try:
        state = primary.query(
            "SELECT state FROM pg_stat_replication WHERE application_name = %s",
            pgconfig.application_name(standby_side),
        )
    except psycopg.Error:
        return False
    return bool(state == "streaming")


def wait_until(predicate: Any, *, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` at the bound."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def pg_cluster(**options: Any) -> Iterator[PgCluster]:
    """A :class:`PgCluster` that is always torn down, whatever the test did."""
    cluster = PgCluster(**options)
    try:
        yield cluster
    finally:
        cluster.close()


@contextlib.contextmanager
def available_pg_cluster() -> Iterator[PgCluster]:
    """An empty two-sided :func:`pg_cluster` (nothing started; every process killed afterwards),
    or the test skipped with the reason PostgreSQL cannot run here: the body of the ``cluster``
    fixtures of the real-Postgres tiers."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with pg_cluster() as created:
        yield created


def served_certificate(port: int, server_name: str, ca_file: Path, host: str = LOOPBACK) -> bytes:
    """The certificate (DER) a Postgres on ``host:port`` serves, verified against ``server_name``
    and ``ca_file``: the protocol's SSLRequest, then a TLS handshake (what a client sees)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection((host, port), timeout=5) as raw:
        raw.sendall(struct.pack("!ii", 8, 80877103))
        answer = raw.recv(1)
        if answer != b"S":
            raise AssertionError(f"the server at {host}:{port} refused TLS ({answer!r})")
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der
