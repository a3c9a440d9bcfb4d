"""``gocd-ha-operator instance-guard``: the second container of each Postgres pod.

It holds the cluster's primary Lease ``<name>-primary`` for its side while its Postgres may be
the primary, and **stops that Postgres itself** when it cannot prove it still holds the Lease:

* a worker thread, every ``--retry-period`` seconds: asks its local Postgres whether it is in
  recovery, reads the Lease and — when :func:`rules.lease.may_renew` allows — renews it with a
  compare-and-swap. A renewal that succeeds moves the deadline to *its start* plus
  ``--renew-deadline`` and writes the start grant the entrypoint waits for;
* a watch thread keeps one watch on that Lease (``watch`` limited to its name) and wakes the
  worker the moment its holder changes: a standby handed the Lease in a switchover renews within
  milliseconds, so the operator's wait for that renewal before ``pg_promote`` is that short, and
  a primary whose Lease was handed away is fenced without waiting for the next attempt. It only
  wakes the worker; every decision is the worker's, on its own read;
* the main thread, every 50 ms: when :func:`rules.lease.must_fence` says so (the deadline is
  ``FENCE_LEAD_SECONDS`` away, or the Lease names the other side), withdraws the grant and stops
  the postmaster with a fast shutdown (SIGINT), escalating to an immediate one (SIGQUIT). The main
  thread never waits on the network, so a hung API request cannot delay the fence.

The postmaster is found through the lock file of its unix socket (``.s.PGSQL.<port>.lock`` in the
socket directory the two containers share); the pod shares its process namespace, and the guard
runs as the postgres user, so it may signal it. It talks to the API server with the pod's own
service account (``KUBERNETES_SERVICE_HOST``/``PORT`` and the token file), or a kubeconfig.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import psycopg

from gocd_ha_operator.api.constants import (
    CM_LEASE_TIMING_KEYS,
    ENV_PORT,
    OPERATOR_DB_USER,
    POSTGRES_PORT,
    SIDES,
    Side,
    cm_role_key,
)
from gocd_ha_operator.guard.settings import refresh_settings
from gocd_ha_operator.guard.tls import refresh, tls_dir
from gocd_ha_operator.kube.apply import KubeClient, default_client
from gocd_ha_operator.kube.lease import LeaseConflictError, get_lease, write_lease
from gocd_ha_operator.kube.names import ChildNames
from gocd_ha_operator.rules import lease as rules

logger = logging.getLogger("gocd_ha_operator.guard")

TICK_SECONDS: Final = 0.05
#: How long one watch request of the Lease lasts (the server ends it; the thread watches again).
WATCH_SECONDS: Final = 60
#: After a broken watch: first pause before watching again, and the ceiling (doubling).
WATCH_RETRY_FIRST_SECONDS: Final = 0.5
WATCH_RETRY_MAX_SECONDS: Final = 8.0
#: After SIGINT (fast shutdown), how long before SIGQUIT (immediate shutdown).
FAST_SHUTDOWN_GRACE_SECONDS: Final = 5.0
PROBE_TIMEOUT_SECONDS: Final = 2
#: How long a primary seen for the first time under this side's Lease is given for the renewal
#: that follows the probe. It ran unrenewed for at most a retry period plus this; the Lease the
#: operator handed over lasts longer (``2 * retry < renew deadline < lease duration``).
PRIMARY_PENDING_SECONDS: Final = 1.0
EXIT_USAGE: Final = 2
#: Role and, on a primary, its timeline (written into the Lease: which history the holder serves).
PROBE_SQL: Final = """
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
       END
"""


@dataclass(frozen=True)
class GuardSettings:
    cluster: str
    namespace: str
    side: Side
    lease_duration: float
    renew_deadline: float
    retry_period: float
    socket_dir: Path
    port: int
    password_file: Path
    grant_file: Path
    postgres_host: str | None = None
    postgres_hostaddr: str | None = None
    #: The mounted server certificate Secret; changes are copied into place and reloaded (§17).
    tls_secret_dir: Path | None = None

    @property
    def identity(self) -> str:
        return rules.holder_identity(self.cluster, self.side)

    @property
    def lease_name(self) -> str:
        return rules.primary_lease_name(self.cluster)


class InstanceGuard:
    """The guard's state; :meth:`run` until ``stop`` is set."""

    def __init__(self, settings: GuardSettings, kube: KubeClient) -> None:
        self.settings = settings
        self.kube = kube
        self.stop = threading.Event()
        #: Set by the watch thread (a holder change) and by :meth:`shutdown`: the worker's next
        #: attempt starts at once instead of after the rest of its retry period.
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self.postgres = rules.LocalPostgres.DOWN
        self.lease_holder: str | None = None
        self.timeline: int | None = None
        self.last_decision: tuple[object, ...] | None = None
        #: Set while a newly seen primary waits for its first renewal (at most PRIMARY_PENDING).
        self.primary_pending_since: float | None = None
        #: A grant left by a predecessor means this side was allowed to run as a primary.
        self.may_be_primary = settings.grant_file.exists()
        self.deadline = self._deadline_from_grant()
        #: When the entrypoint was last seen asking for a grant (its request file), monotonic.
        self.last_request: float | None = None
        self.fenced_pid: int | None = None
        self.fenced_at = 0.0

    # --- the start grant ---------------------------------------------------------------------

    def _deadline_from_grant(self) -> float:
        """A restarted guard continues the deadline its predecessor granted, and no further: the
        operator may have been counting since the predecessor's last renewal."""
        try:
            grant = float(self.settings.grant_file.read_text().strip())
        except (OSError, ValueError):
            return time.monotonic()
        return time.monotonic() + (grant - time.time())

    def _write_grant(self, deadline: float) -> None:
        wall = time.time() + (deadline - time.monotonic())
        tmp = self.settings.grant_file.with_name(self.settings.grant_file.name + ".tmp")
        tmp.write_text(f"{wall:.3f}\n")
        tmp.replace(self.settings.grant_file)

    def _withdraw_grant(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.settings.grant_file.unlink()

    # --- observing -----------------------------------------------------------------------------

    def _start_requested(self) -> bool:
        """The entrypoint touches ``<grant file>.request`` every second while it waits."""
        request = self.settings.grant_file.with_name(self.settings.grant_file.name + ".request")
        try:
            age = time.time() - request.stat().st_mtime
        except OSError:
            return False
        return age < max(2.0, 2 * self.settings.retry_period)

    def probe(self) -> rules.LocalPostgres:
        """Ask the local Postgres whether it is in recovery; any failure is ``Down``."""
        s = self.settings
        try:
            password = s.password_file.read_text().rstrip("\n")
            # Over TCP (tests on loopback) with full verification, as every client (§17).
            tcp: dict[str, Any] = {}
            if s.postgres_host:
                tcp = {
                    "sslmode": "verify-full",
                    "sslrootcert": str(tls_dir(s.socket_dir) / "ca.crt"),
                }
                if s.postgres_hostaddr:
                    tcp["hostaddr"] = s.postgres_hostaddr
            with psycopg.connect(
                host=s.postgres_host or str(s.socket_dir),
                **tcp,
                port=s.port,
                user=OPERATOR_DB_USER,
                dbname="postgres",
                password=password,
                connect_timeout=PROBE_TIMEOUT_SECONDS,
                application_name="gocdha-instance-guard",
                autocommit=True,
            ) as conn:
                row = conn.execute(PROBE_SQL).fetchone()
        except (OSError, psycopg.Error):
            return rules.LocalPostgres.DOWN
        in_recovery = bool(row and row[0])
        self.timeline = int(row[1]) if row and row[1] is not None else None
        return rules.LocalPostgres.STANDBY if in_recovery else rules.LocalPostgres.PRIMARY

    def read_configmap(self) -> str | None:
        """The role of this side from ``<name>-postgres``, and the Lease timings in force (a spec
        edit changes them there, not in the pod template, so it restarts no database)."""
        s = self.settings
        try:
            cm = self.kube.get(
                "v1", "ConfigMap", s.namespace, ChildNames(s.cluster).postgres_configmap
            )
        except Exception:
            return None
        if cm is None:
            return None
        data = cm.get("data") or {}
        refresh_settings(s.socket_dir, data, self.postmaster_pid)
        try:
            timings = tuple(float(data[key]) for key in CM_LEASE_TIMING_KEYS)
        except (KeyError, ValueError):
            timings = ()
        if len(timings) == 3:
            lease, deadline, retry = timings
            changed = (lease, deadline, retry) != (
                s.lease_duration,
                s.renew_deadline,
                s.retry_period,
            )
            if changed and 0 < retry * 2 <= deadline < lease:
                logger.info(
                    "Lease timings from the ConfigMap: lease %ss, renew deadline %ss, retry %ss",
                    lease,
                    deadline,
                    retry,
                )
                self.settings = replace(
                    s, lease_duration=lease, renew_deadline=deadline, retry_period=retry
                )
        role = data.get(cm_role_key(s.side))
        return str(role) if role is not None else None

    # --- the worker: probe, read, renew --------------------------------------------------------

    def attempt(self) -> None:
        """One renewal attempt. Its start time is what a success extends the deadline from."""
        started = time.monotonic()
        state = self.probe()
        now = time.monotonic()
        with self._lock:
            if (
                state == rules.LocalPostgres.PRIMARY
                and self.postgres != rules.LocalPostgres.PRIMARY
            ):
                # Just promoted (the operator handed this side the Lease first) or started: read
                # and renew before the main thread judges the new primary by a deadline it had no
                # reason to extend yet — for at most PRIMARY_PENDING_SECONDS.
                self.primary_pending_since = now
            else:
                self.postgres = state
        try:
            self._renew(state, started)
        finally:
            with self._lock:
                self.postgres = state
                self.primary_pending_since = None
                if state == rules.LocalPostgres.PRIMARY:
                    self.may_be_primary = True
                elif state == rules.LocalPostgres.STANDBY:
                    self.may_be_primary = False

    def _grace_open(self) -> bool:
        """Whether a Postgres that is down may keep this side's Lease: while its entrypoint asks
        for a grant and one Lease duration after (its start); one that cannot start stops holding
        the Lease."""
        now = time.monotonic()
        with self._lock:
            if self._start_requested():
                self.last_request = now
            return (
                self.last_request is not None
                and now - self.last_request < self.settings.lease_duration
            )

    def _renew(self, state: rules.LocalPostgres, started: float) -> None:
        s = self.settings
        try:
            current = get_lease(self.kube, s.namespace, s.lease_name)
        except Exception as exc:
            logger.warning("cannot read Lease %s: %s", s.lease_name, exc)
            return
        holder = current.holder if current is not None else None
        with self._lock:
            self.lease_holder = holder
        configured = self.read_configmap()
        # Read after the API requests, not before: under load they take seconds, and a request
        # the entrypoint made meanwhile would otherwise wait for the next attempt (a primary's
        # first start waited a whole retry period and more for its grant).
        grace_open = self._grace_open()
        role = configured if state == rules.LocalPostgres.DOWN else None
        renew = current is not None and rules.may_renew(
            identity=s.identity,
            lease_holder=holder,
            postgres=state,
            configured_role=role,
            startup_grace_open=grace_open,
        )
        decision = (renew, holder, state, role, grace_open)
        if decision != self.last_decision:
            # Logged when it changes: why this side holds the Lease or not.
            logger.info(
                "%s: Lease holder %s, local Postgres %s, configured role %s, start asked for %s",
                "renewing" if renew else "not renewing",
                holder,
                state,
                role,
                grace_open,
            )
            self.last_decision = decision
        if not renew or current is None:
            return
        try:
            write_lease(
                self.kube,
                current,
                holder=s.identity,
                duration_seconds=round(s.lease_duration),
                now=datetime.now(UTC),
                timeline=self.timeline if state == rules.LocalPostgres.PRIMARY else None,
            )
        except LeaseConflictError:
            logger.info("Lease %s changed while renewing; re-reading", s.lease_name)
            return
        except Exception as exc:
            logger.warning("cannot renew Lease %s: %s", s.lease_name, exc)
            return
        deadline = rules.renewed_deadline(started, s.renew_deadline)
        with self._lock:
            if deadline > self.deadline:
                self.deadline = deadline
                if not self._fence_due():
                    self._write_grant(deadline)
                    self.may_be_primary = True

    def reload_certificate(self) -> None:
        """A changed server certificate Secret: copy it into place and reload Postgres (§17)."""
        secret_dir = self.settings.tls_secret_dir
        if secret_dir is None:
            return
        serial = refresh(secret_dir, tls_dir(self.settings.socket_dir))
        if serial is None:
            return
        pid = self.postmaster_pid()
        if pid is None:  # not running: it reads the new files when it starts
            logger.info("server certificate updated (serial %x); Postgres is not running", serial)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGHUP)
        logger.info("server certificate updated (serial %x): Postgres reloaded", serial)

    def shutdown(self) -> None:
        self.stop.set()
        self.wake.set()

    def _worker(self) -> None:
        while not self.stop.is_set():
            began = time.monotonic()
            self.wake.clear()  # a holder change seen from here on starts the next attempt
            try:
                self.reload_certificate()
            except Exception:  # the worker must survive anything
                logger.exception("certificate reload failed")
            try:
                self.attempt()
            except Exception:  # the worker must survive anything
                logger.exception("renewal attempt failed")
            self.wake.wait(max(0.0, self.settings.retry_period - (time.monotonic() - began)))

    # --- the watch thread: wake the worker when the holder changes -----------------------------

    def holder_changed(self, holder: str | None) -> bool:
        """Whether a watched holder differs from the one the worker last read (then it wakes)."""
        with self._lock:
            return holder != self.lease_holder

    def _watch(self) -> None:
        """Watch the Lease and wake the worker at each change of its holder. Never decides
        anything: a missed or late event only means the worker finds the change at its next
        attempt, as it would without this thread."""
        s = self.settings
        version: str | None = None
        pause = WATCH_RETRY_FIRST_SECONDS
        while not self.stop.is_set():
            try:
                for kind, obj in self.kube.watch(
                    "coordination.k8s.io/v1",
                    "Lease",
                    s.namespace,
                    s.lease_name,
                    resource_version=version,
                    timeout_seconds=WATCH_SECONDS,
                ):
                    if self.stop.is_set():
                        return
                    if kind == "ERROR":  # e.g. 410 Gone: the version is too old
                        version = None
                        break
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    holder = (obj.get("spec") or {}).get("holderIdentity") or None
                    if self.holder_changed(holder):
                        self.wake.set()
                pause = WATCH_RETRY_FIRST_SECONDS
            except Exception as exc:  # the API may be unreachable: the worker still polls
                logger.debug("watching Lease %s failed: %s", s.lease_name, exc)
                version = None
                self.stop.wait(pause)
                pause = min(pause * 2, WATCH_RETRY_MAX_SECONDS)

    # --- the main thread: fence on time --------------------------------------------------------

    def _fence_due(self) -> bool:
        now = time.monotonic()
        postgres = self.postgres
        pending = self.primary_pending_since
        if pending is not None and now - pending >= PRIMARY_PENDING_SECONDS:
            postgres = rules.LocalPostgres.PRIMARY  # the renewal is late: judge it as a primary
        view = rules.GuardView(
            identity=self.settings.identity,
            postgres=postgres,
            lease_holder=self.lease_holder,
            deadline=self.deadline,
            now=now,
            may_be_primary=self.may_be_primary,
        )
        return rules.must_fence(view)

    def postmaster_pid(self) -> int | None:
        lock = self.settings.socket_dir / f".s.PGSQL.{self.settings.port}.lock"
        try:
            pid = int(lock.read_text().split("\n", 1)[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"postgres" in cmdline else None

    def fence(self) -> None:
        """Withdraw the grant and stop the postmaster: SIGINT, then SIGQUIT after the grace."""
        self._withdraw_grant()
        pid = self.postmaster_pid()
        if pid is None:
            # Stopped (or never started): what starts next needs a new grant to be a primary.
            self.fenced_pid = None
            self.may_be_primary = False
            return
        now = time.monotonic()
        if self.fenced_pid != pid:
            self.fenced_pid, self.fenced_at = pid, now
            logger.warning(
                "FENCING: stopping Postgres (pid %d, fast shutdown): deadline %s, Lease holder %s, "
                "local Postgres %s",
                pid,
                _wall(self.deadline),
                self.lease_holder,
                self.postgres,
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
        elif now - self.fenced_at > FAST_SHUTDOWN_GRACE_SECONDS:
            logger.warning("Postgres (pid %d) still running: immediate shutdown", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)
            self.fenced_at = now

    def run(self) -> None:
        s = self.settings
        logger.info(
            "guarding %s/%s as %s: lease %ss, renew deadline %ss, retry %ss; deadline %s",
            s.namespace,
            s.lease_name,
            s.identity,
            s.lease_duration,
            s.renew_deadline,
            s.retry_period,
            _wall(self.deadline),
        )
        worker = threading.Thread(target=self._worker, name="renew", daemon=True)
        worker.start()
        # A daemon thread: a watch request may be blocked on the network when the guard stops.
        threading.Thread(target=self._watch, name="watch", daemon=True).start()
        while not self.stop.is_set():
            with self._lock:
                due = self._fence_due()
                if due:
                    self.fence()
            self.stop.wait(TICK_SECONDS)
        self.wake.set()
        worker.join(timeout=5)


def _wall(deadline: float) -> str:
    moment = datetime.fromtimestamp(time.time() + (deadline - time.monotonic()), UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", required=True, help="name of the GoCDHACluster")
    parser.add_argument(
        "--namespace",
        default=os.environ.get("POD_NAMESPACE"),
        help="namespace of the Lease (default: $POD_NAMESPACE)",
    )
    parser.add_argument("--side", required=True, choices=SIDES, help="this pod's side")
    # Until the ConfigMap is read (it carries the spec's timings); the Lease records the duration
    # the guard wrote, which is what the operator waits for, so any ordered triple is safe.
    parser.add_argument("--lease-duration", type=float, default=30.0, metavar="SECONDS")
    parser.add_argument("--renew-deadline", type=float, default=20.0, metavar="SECONDS")
    parser.add_argument("--retry-period", type=float, default=4.0, metavar="SECONDS")
    parser.add_argument(
        "--socket-dir", type=Path, required=True, help="Postgres's unix socket directory"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get(ENV_PORT) or POSTGRES_PORT),
        help=f"Postgres's port (default: ${ENV_PORT}, else {POSTGRES_PORT})",
    )
    parser.add_argument(
        "--postgres-host",
        default=None,
        help="connect here instead of the socket directory (tests on loopback)",
    )
    parser.add_argument(
        "--postgres-hostaddr",
        default=None,
        help="numeric address for --postgres-host (TLS is still verified against the host name)",
    )
    parser.add_argument(
        "--tls-secret-dir",
        type=Path,
        default=None,
        help="the mounted server certificate Secret: changes are copied and Postgres reloaded",
    )
    parser.add_argument(
        "--password-file", type=Path, required=True, help="the gocdha_operator role's password"
    )
    parser.add_argument(
        "--grant-file", type=Path, required=True, help="where the start grant is written"
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s instance-guard %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    # urllib3 logs every retry of an unreachable API; the guard's own line says it once.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    if not args.namespace:
        print("instance-guard: give --namespace or set POD_NAMESPACE", file=sys.stderr)
        return EXIT_USAGE
    if not 0 < args.retry_period * 2 <= args.renew_deadline < args.lease_duration:
        print(
            "instance-guard: need 2 * --retry-period <= --renew-deadline < --lease-duration",
            file=sys.stderr,
        )
        return EXIT_USAGE
    settings = GuardSettings(
        cluster=args.cluster,
        namespace=args.namespace,
        side=args.side,
        lease_duration=args.lease_duration,
        renew_deadline=args.renew_deadline,
        retry_period=args.retry_period,
        socket_dir=args.socket_dir,
        port=args.port,
        password_file=args.password_file,
        grant_file=args.grant_file,
        postgres_host=args.postgres_host,
        postgres_hostaddr=args.postgres_hostaddr,
        tls_secret_dir=args.tls_secret_dir,
    )
    # A request may not outlive the retry period: a hung API must not hold the worker past the
    # next attempt (the fence does not depend on it either way).
    guard = InstanceGuard(settings, default_client(request_timeout=max(1.0, args.retry_period)))
    signal.signal(signal.SIGTERM, lambda *_: guard.shutdown())
    signal.signal(signal.SIGINT, lambda *_: guard.shutdown())
    guard.run()
    return 0
