"""The operator's view of one Postgres instance, over the network as the operator role.

docs/architecture.md §5, §6: the operator never execs into pods; it connects to
``<cluster>-pg-<side>`` as ``gocdha_operator`` (``pg_monitor``, EXECUTE on ``pg_promote``,
``pg_checkpoint`` on PG 15+, ``REPLICATION`` for slot functions) and reads or acts with SQL.

Every call opens its own short connection: an instance may be restarted, fenced or promoted between
two calls and a cached connection would only hide that. Every call is bounded (connect timeout,
``statement_timeout``, an overall ``asyncio`` deadline), and every failure surfaces as a
:class:`PostgresError` subclass whose message names the instance and never contains a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, TypeVar

import psycopg
from psycopg.rows import dict_row

from gocd_ha_operator.api.constants import (
    HOT_STANDBY_SENSITIVE_SETTINGS,
    OPERATOR_DB_USER,
    PG_CONFIG_REVISION_SETTING,
    PG_RAISED_SETTINGS_SETTING,
    POSTGRES_PORT,
    SLOT_PREFIX,
)
from gocd_ha_operator.kube.endpoints import Endpoint, resolve

T = TypeVar("T")

DEFAULT_CONNECT_TIMEOUT_SECONDS: Final = 5.0
DEFAULT_STATEMENT_TIMEOUT_SECONDS: Final = 15.0
#: How often a replay position is polled (on one connection: a query costs well under a
#: millisecond, a new TLS connection tens of them under load).
_REPLAY_POLL_SECONDS: Final = 0.02
#: How long a TCP probe (``refuses_connections``) waits for an answer.
_PROBE_TIMEOUT_SECONDS: Final = 1.0
#: How often a promotion's end is polled (on the connection that signalled it).
_PROMOTE_POLL_SECONDS: Final = 0.01
#: SQLSTATEs of authentication failures (invalid_authorization_specification, invalid_password).
_AUTH_SQLSTATES: Final = frozenset({"28000", "28P01"})
_AUTH_MESSAGES: Final = ("password authentication failed", "no pg_hba.conf entry", "not permitted")


class PostgresError(Exception):
    """Base of every error raised by this module; the message is safe to log and to show."""


class PostgresUnreachable(PostgresError):  # noqa: N818 - the names the operator's handlers use
    """No connection could be made (refused, timed out, name unknown, server shutting down)."""


class PostgresAuthFailed(PostgresError):  # noqa: N818 - the names the operator's handlers use
    """The instance answered but rejected the operator role's credentials."""


class PostgresQueryFailed(PostgresError):  # noqa: N818 - the names the operator's handlers use
    """Connected, but a statement failed or exceeded the statement timeout."""


class PromotionFailed(PostgresError):  # noqa: N818 - the names the operator's handlers use
    """``pg_promote`` did not finish, or the instance cannot be promoted."""


class ReplayTimeout(PostgresError):  # noqa: N818 - the names the operator's handlers use
    """The standby did not replay up to the requested LSN in time."""

    def __init__(self, message: str, *, target_lsn: int, replayed_lsn: int | None) -> None:
        super().__init__(message)
        self.target_lsn = target_lsn
        self.replayed_lsn = replayed_lsn


class PrimaryNotStopped(PostgresError):  # noqa: N818 - the names the operator's handlers use
    """A switchover's old primary did not stop in time (it still accepted TCP connections, or
    the standby still streamed from it)."""


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` → byte position. LSNs are compared and subtracted as integers here."""
    high, sep, low = text.partition("/")
    if not sep:
        raise ValueError(f"{text!r} is not an LSN")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(value: int) -> str:
    """Byte position → Postgres' ``'X/X'`` notation."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def _lsn_or_none(value: object) -> int | None:
    return None if value is None else parse_lsn(str(value))


def _seconds_or_none(value: object) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if hasattr(value, "total_seconds") else float(str(value))
    return float(seconds)


@dataclass(frozen=True)
class ReplicationConnection:
    """One row of ``pg_stat_replication`` on a primary: a standby (or a backup) streaming."""

    application_name: str
    client_addr: str | None
    state: str
    sync_state: str
    sent_lsn: int | None
    write_lsn: int | None
    flush_lsn: int | None
    replay_lsn: int | None
    #: ``pg_current_wal_lsn() - replay_lsn``: what a promotion of that standby now would lose.
    replay_lag_bytes: int | None
    write_lag_seconds: float | None
    flush_lag_seconds: float | None
    replay_lag_seconds: float | None


@dataclass(frozen=True)
class ReplicationSlot:
    """One physical slot of ``pg_replication_slots``."""

    slot_name: str
    active: bool
    #: ``reserved`` | ``extended`` | ``unreserved`` | ``lost``: ``lost`` means the standby can
    #: only catch up from the archive.
    wal_status: str | None
    restart_lsn: int | None
    safe_wal_size: int | None


@dataclass(frozen=True)
class ArchiverStats:
    """``pg_stat_archiver``: is WAL reaching the shared archive?"""

    archived_count: int
    last_archived_wal: str | None
    last_archived_time: datetime | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_time: datetime | None

    @property
    def failing(self) -> bool:
        """True when the latest attempt failed (a later success clears it)."""
        if self.last_failed_time is None:
            return False
        return self.last_archived_time is None or self.last_failed_time > self.last_archived_time


@dataclass(frozen=True)
class ConfigReading:
    """Which configuration an instance runs (docs/architecture.md §16)."""

    #: ``gocdha.config_revision`` as loaded (``None``: a configuration older than revisions).
    revision: str | None
    #: Settings changed in the files that wait for a restart (``pg_settings.pending_restart``).
    pending_restart: tuple[str, ...]
    server_version: str
    #: ``pg_postmaster_start_time()`` as text: a different value means the server restarted.
    started_at: str
    #: The hot-standby-sensitive settings (``HOT_STANDBY_SENSITIVE_SETTINGS``) as
    #: (name, running value, PostgreSQL default), from ``pg_settings``.
    sensitive: tuple[tuple[str, int, int], ...] = ()
    #: What the entrypoint started above its configured value (``gocdha.raised_settings``).
    raised: tuple[str, ...] = ()


_CONFIG_SQL: Final = """
SELECT current_setting(%s, true) AS revision,
       ARRAY(SELECT name FROM pg_settings WHERE pending_restart ORDER BY name) AS pending,
       current_setting('server_version') AS version,
       pg_postmaster_start_time()::text AS started,
       ARRAY(SELECT name || '=' || setting || '=' || coalesce(boot_val, '')
             FROM pg_settings WHERE name = ANY(%s) ORDER BY name) AS sensitive,
       coalesce(current_setting(%s, true), '') AS raised
"""


def _sensitive(rows: Sequence[str] | None) -> tuple[tuple[str, int, int], ...]:
    found = []
    for row in rows or ():
        name, setting, default = [*str(row).split("="), "", ""][:3]
        if setting.isdigit() and default.isdigit():
            found.append((name, int(setting), int(default)))
    return tuple(found)


@dataclass(frozen=True)
class InstanceObservation:
    """Everything the operator learns about one instance in one round trip.

    ``reachable`` is False (and ``error`` says why) when no connection could be made; every other
    field is then at its default. LSNs are byte positions (see :func:`format_lsn`).
    """

    endpoint: str
    reachable: bool
    error: str | None = None
    in_recovery: bool | None = None
    timeline: int | None = None
    #: On a primary: ``pg_current_wal_lsn()``. On a standby: the replay position.
    current_lsn: int | None = None
    received_lsn: int | None = None
    replayed_lsn: int | None = None
    #: On a standby: WAL received but not replayed yet. ``None`` on a primary.
    lag_bytes: int | None = None
    #: On a standby: age of the last replayed transaction, zero when everything received is
    #: replayed (an idle primary must not look like lag). ``None`` on a primary, and on a
    #: standby with a backlog that has not replayed any transaction since it started (unknown).
    lag_seconds: float | None = None
    wal_receiver_status: str | None = None
    replication: tuple[ReplicationConnection, ...] = ()
    slots: tuple[ReplicationSlot, ...] = ()
    archiver: ArchiverStats | None = None
    config: ConfigReading | None = None

    @property
    def role(self) -> str | None:
        """``primary`` / ``standby`` as this instance reports it, ``None`` when unreachable."""
        if self.in_recovery is None:
            return None
        return "standby" if self.in_recovery else "primary"


@dataclass(frozen=True)
class PromotionResult:
    """What :meth:`PostgresClient.promote` did."""

    #: False when the instance already was a primary (promotion is idempotent).
    promoted: bool
    #: The timeline it writes on, read once it was seen out of recovery.
    timeline: int | None
    #: Whether the post-promotion CHECKPOINT ran; ``pg_rewind`` of the old primary needs it.
    checkpointed: bool
    duration_seconds: float


_STANDBY_SQL: Final = """
SELECT pg_last_wal_receive_lsn()::text AS received,
       pg_last_wal_replay_lsn()::text AS replayed,
       GREATEST(0, COALESCE(pg_wal_lsn_diff(pg_last_wal_receive_lsn(),
                                            pg_last_wal_replay_lsn()), 0))::bigint AS lag_bytes,
       CASE WHEN pg_last_wal_receive_lsn() IS NULL
                 OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0
            ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())
       END::float8 AS lag_seconds,
       (SELECT status FROM pg_stat_wal_receiver) AS receiver_status,
       COALESCE((SELECT received_tli FROM pg_stat_wal_receiver),
                (SELECT timeline_id FROM pg_control_checkpoint())) AS timeline
"""

#: Ends every client session the operator role may end (``end_client_sessions``).
_END_SESSIONS_SQL: Final = (
    "SELECT count(*) FILTER (WHERE pg_terminate_backend(a.pid)) "
    "FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid "
    "WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid() "
    "AND a.usename IS DISTINCT FROM current_user AND NOT COALESCE(r.rolsuper, false)"
)

#: A standby's stream, as a switchover watches it while the old primary stops.
_STREAM_SQL: Final = """
SELECT pg_is_in_recovery() AS in_recovery,
       (SELECT status FROM pg_stat_wal_receiver) AS receiver_status,
       pg_last_wal_receive_lsn()::text AS received,
       pg_last_wal_replay_lsn()::text AS replayed
"""

_PRIMARY_SQL: Final = """
SELECT pg_current_wal_lsn()::text AS current,
       ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS timeline
"""

_REPLICATION_SQL: Final = """
SELECT application_name, client_addr::text AS client_addr, state, sync_state,
       sent_lsn::text, write_lsn::text, flush_lsn::text, replay_lsn::text,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS replay_lag_bytes,
       write_lag, flush_lag, replay_lag
FROM pg_stat_replication ORDER BY application_name
"""

_SLOTS_SQL: Final = """
SELECT slot_name, active, wal_status, restart_lsn::text, safe_wal_size
FROM pg_replication_slots WHERE slot_type = 'physical' ORDER BY slot_name
"""

_ARCHIVER_SQL: Final = """
SELECT archived_count, last_archived_wal, last_archived_time,
       failed_count, last_failed_wal, last_failed_time
FROM pg_stat_archiver
"""


@dataclass(frozen=True)
class FinalPosition:
    """What a standby showed once its primary had stopped (``replay_when_primary_stopped``):
    ``received_lsn`` is final (nothing streams to it any more) and, when it is in recovery,
    replayed (``replayed_lsn`` at least as far)."""

    in_recovery: bool
    received_lsn: int | None
    replayed_lsn: int | None


@dataclass(frozen=True)
class ClientTLS:
    """How a connection verifies the server (``sslmode=verify-full``, docs/architecture.md §17).

    ``server_name`` is the name the certificate must carry (the Service's DNS name); the
    connection goes to the endpoint's address (libpq ``hostaddr``) when that differs, so an
    endpoint override (``GOCDHA_ENDPOINTS``) never weakens the check.
    """

    server_name: str
    ca_file: str


def service_server_name(namespace: str, service: str) -> str:
    """The name a client verifies a Postgres Service's certificate against."""
    return f"{service}.{namespace}.svc"


async def _address_of(host: str, port: int) -> str:
    """``host`` as a numeric address (libpq's ``hostaddr`` takes no names)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"cannot resolve {host}")
    return str(infos[0][4][0])


@dataclass(frozen=True)
class PostgresClient:
    """Talks to one instance as the operator role. Cheap to build; holds no connection."""

    endpoint: Endpoint
    password: str = field(repr=False)
    tls: ClientTLS
    user: str = OPERATOR_DB_USER
    dbname: str = "postgres"
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_SECONDS
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT_SECONDS

    @classmethod
    def for_service(
        cls,
        namespace: str,
        service: str,
        *,
        password: str,
        ca_file: str,
        port: int = POSTGRES_PORT,
        overrides: Mapping[str, Endpoint] | None = None,
        **options: Any,
    ) -> PostgresClient:
        """A client for ``<service>.<namespace>.svc`` (or its ``GOCDHA_ENDPOINTS`` override),
        verifying the server certificate against that name and the CA in ``ca_file``."""
        return cls(
            resolve(namespace, service, port, overrides),
            password=password,
            tls=ClientTLS(service_server_name(namespace, service), ca_file),
            **options,
        )

    # --- connections ------------------------------------------------------------------------------

    def _safe(self, text: str) -> str:
        """``text`` with the password blanked out, whatever produced it."""
        return text.replace(self.password, "***") if self.password else text

    def _classify(self, exc: Exception, doing: str) -> PostgresError:
        message = self._safe(str(exc).strip().replace("\n", " "))
        where = f"postgres at {self.endpoint} ({doing})"
        sqlstate = getattr(exc, "sqlstate", None)
        if sqlstate in _AUTH_SQLSTATES or any(m in message for m in _AUTH_MESSAGES):
            return PostgresAuthFailed(f"{where}: authentication as {self.user} failed: {message}")
        if isinstance(exc, psycopg.OperationalError) and sqlstate is None:
            return PostgresUnreachable(f"{where}: cannot connect: {message}")
        if isinstance(exc, TimeoutError):
            return PostgresUnreachable(f"{where}: no answer within the deadline")
        return PostgresQueryFailed(f"{where}: {message}")

    @contextlib.asynccontextmanager
    async def _connect(self, doing: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        statement_ms = max(1, int(self.statement_timeout * 1000))
        try:
            async with asyncio.timeout(self.connect_timeout + 1):
                address: dict[str, Any] = {}
                if self.endpoint.host != self.tls.server_name:
                    address["hostaddr"] = await _address_of(self.endpoint.host, self.endpoint.port)
                conn = await psycopg.AsyncConnection.connect(
                    host=self.tls.server_name,
                    **address,
                    port=self.endpoint.port,
                    sslmode="verify-full",
                    sslrootcert=self.tls.ca_file,
                    user=self.user,
                    password=self.password,
                    dbname=self.dbname,
                    # libpq's own bound; it counts whole seconds and at least 2.
                    connect_timeout=max(2, math.ceil(self.connect_timeout)),
                    application_name="gocd-ha-operator",
                    options=f"-c statement_timeout={statement_ms}",
                    autocommit=True,
                )
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise self._classify(exc, doing) from None
        try:
            yield conn
        except psycopg.Error as exc:
            raise self._classify(exc, doing) from None
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _bounded(self, coro: Coroutine[Any, Any, T], doing: str, waits: float = 0.0) -> T:
        """Runs ``coro`` under a deadline a little above the statement timeout, plus ``waits``:
        how long ``coro`` itself waits on purpose (a poll until a position is replayed)."""
        try:
            async with asyncio.timeout(waits + self.connect_timeout + self.statement_timeout + 2):
                return await coro
        except TimeoutError:
            raise PostgresUnreachable(
                f"postgres at {self.endpoint} ({doing}): no answer within the deadline"
            ) from None

    async def refuses_connections(self) -> bool:
        """Whether a plain TCP connection to the instance fails (refused, unreachable, no answer
        within a second, name unknown): a stopped instance's port is closed. No TLS handshake,
        no query: a switchover polls this while its old primary stops, and a poll must cost far
        less than the wait it ends. A refusal alone proves nothing (the network may be what
        fails): the caller confirms with the standby."""
        try:
            async with asyncio.timeout(min(self.connect_timeout, _PROBE_TIMEOUT_SECONDS)):
                _reader, writer = await asyncio.open_connection(
                    self.endpoint.host, self.endpoint.port
                )
        except (OSError, TimeoutError):
            return True
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return False

    # --- observation ------------------------------------------------------------------------------

    async def observe(self) -> InstanceObservation:
        """One snapshot of role, timeline, LSNs, lag, streaming, slots and archiving.

        An instance that cannot be reached is a normal observation (``reachable=False``), not an
        error: a primary that is down is exactly what the operator must see. Authentication and
        query failures still raise, because they mean a broken setup rather than a down instance.
        """
        try:
            return await self._bounded(self._observe(), "observe")
        except PostgresUnreachable as exc:
            return InstanceObservation(endpoint=str(self.endpoint), reachable=False, error=str(exc))

    async def _observe(self) -> InstanceObservation:
        async with self._connect("observe") as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT pg_is_in_recovery() AS in_recovery")
            row = await cur.fetchone()
            assert row is not None
            in_recovery = bool(row["in_recovery"])
            await cur.execute(
                _CONFIG_SQL,
                (
                    PG_CONFIG_REVISION_SETTING,
                    list(HOT_STANDBY_SENSITIVE_SETTINGS),
                    PG_RAISED_SETTINGS_SETTING,
                ),
            )
            c = await cur.fetchone()
            assert c is not None
            config = ConfigReading(
                revision=c["revision"] or None,
                pending_restart=tuple(c["pending"] or ()),
                server_version=str(c["version"]),
                started_at=str(c["started"]),
                sensitive=_sensitive(c["sensitive"]),
                raised=tuple(name for name in str(c["raised"] or "").split(",") if name),
            )
            await cur.execute(_ARCHIVER_SQL)
            arch = await cur.fetchone()
            assert arch is not None
            archiver = ArchiverStats(
                archived_count=int(arch["archived_count"]),
                last_archived_wal=arch["last_archived_wal"],
                last_archived_time=arch["last_archived_time"],
                failed_count=int(arch["failed_count"]),
                last_failed_wal=arch["last_failed_wal"],
                last_failed_time=arch["last_failed_time"],
            )
            await cur.execute(_SLOTS_SQL)
            slots = tuple(
                ReplicationSlot(
                    slot_name=r["slot_name"],
                    active=bool(r["active"]),
                    wal_status=r["wal_status"],
                    restart_lsn=_lsn_or_none(r["restart_lsn"]),
                    safe_wal_size=None if r["safe_wal_size"] is None else int(r["safe_wal_size"]),
                )
                for r in await cur.fetchall()
            )
            if in_recovery:
                await cur.execute(_STANDBY_SQL)
                s = await cur.fetchone()
                assert s is not None
                replayed = _lsn_or_none(s["replayed"])
                return InstanceObservation(
                    endpoint=str(self.endpoint),
                    reachable=True,
                    in_recovery=True,
                    timeline=None if s["timeline"] is None else int(s["timeline"]),
                    current_lsn=replayed,
                    received_lsn=_lsn_or_none(s["received"]),
                    replayed_lsn=replayed,
                    lag_bytes=int(s["lag_bytes"]),
                    lag_seconds=None
                    if s["lag_seconds"] is None
                    else max(0.0, float(s["lag_seconds"])),
                    wal_receiver_status=s["receiver_status"],
                    slots=slots,
                    archiver=archiver,
                    config=config,
                )
            await cur.execute(_PRIMARY_SQL)
            p = await cur.fetchone()
            assert p is not None
            await cur.execute(_REPLICATION_SQL)
            replication = tuple(
                ReplicationConnection(
                    application_name=r["application_name"],
                    client_addr=r["client_addr"],
                    state=r["state"],
                    sync_state=r["sync_state"],
                    sent_lsn=_lsn_or_none(r["sent_lsn"]),
                    write_lsn=_lsn_or_none(r["write_lsn"]),
                    flush_lsn=_lsn_or_none(r["flush_lsn"]),
                    replay_lsn=_lsn_or_none(r["replay_lsn"]),
                    replay_lag_bytes=None
                    if r["replay_lag_bytes"] is None
                    else int(r["replay_lag_bytes"]),
                    write_lag_seconds=_seconds_or_none(r["write_lag"]),
                    flush_lag_seconds=_seconds_or_none(r["flush_lag"]),
                    replay_lag_seconds=_seconds_or_none(r["replay_lag"]),
                )
                for r in await cur.fetchall()
            )
            return InstanceObservation(
                endpoint=str(self.endpoint),
                reachable=True,
                in_recovery=False,
                timeline=int(p["timeline"]),
                current_lsn=parse_lsn(p["current"]),
                replication=replication,
                slots=slots,
                archiver=archiver,
                config=config,
            )

    # --- actions ----------------------------------------------------------------------------------

    async def _scalar(self, sql: str, params: tuple[Any, ...], doing: str) -> Any:
        async def run() -> Any:
            async with self._connect(doing) as conn, conn.cursor() as cur:
                await cur.execute(sql, params)
                row = await cur.fetchone()
                return None if row is None else row[0]

        return await self._bounded(run(), doing)

    async def current_lsn(self) -> int:
        """The primary's current WAL write position (what a switchover waits for)."""
        value = await self._scalar("SELECT pg_current_wal_lsn()::text", (), "current LSN")
        return parse_lsn(str(value))

    async def end_client_sessions(self) -> int:
        """Terminate every other client session this role may end (not replication, not this
        role's, not a superuser's: ``pg_signal_backend`` cannot signal those, and trying would
        fail the whole statement). Returns how many sessions were ended.

        A superuser session left open may still commit; a switchover covers it by stopping the
        old primary cleanly (its last WAL reaches the streaming standby) and waiting until the
        standby has replayed everything it received before promoting it."""
        value = await self._scalar(_END_SESSIONS_SQL, (), "end client sessions")
        return int(value or 0)

    async def end_client_sessions_then_lsn(self) -> tuple[int, int]:
        """:meth:`end_client_sessions`, then :meth:`current_lsn` read on the same connection
        right after (a switchover's write outage runs from the first: a second connection for
        the position would cost a TLS handshake). Returns ``(sessions ended, LSN)``."""
        doing = "end client sessions"

        async def run() -> tuple[int, int]:
            async with self._connect(doing) as conn, conn.cursor() as cur:
                await cur.execute(_END_SESSIONS_SQL)
                ended = await cur.fetchone()
                await cur.execute("SELECT pg_current_wal_lsn()::text")
                current = await cur.fetchone()
                assert current is not None
                return int((ended or (0,))[0] or 0), parse_lsn(str(current[0]))

        return await self._bounded(run(), doing)

    async def checkpoint(self) -> None:
        """``CHECKPOINT``: before a switchover, and after promotion so ``pg_rewind`` works.

        Needs ``pg_checkpoint`` (PG 15+) for a non-superuser.
        """

        async def run() -> None:
            async with self._connect("checkpoint") as conn:
                await conn.execute("CHECKPOINT")

        await self._bounded(run(), "checkpoint")

    async def wait_for_replay(self, lsn: int | Awaitable[int], timeout: float) -> int:
        """Wait until this standby has replayed at least ``lsn``; returns the replayed LSN.

        One connection for the whole wait, polled every 20 ms: a switchover's write outage lasts
        while it waits, and a new TLS connection per poll would cost more than the poll. ``lsn``
        may be awaitable (a switchover reads it from the old primary): it is awaited once this
        connection is open, so the handshake overlaps that read. Raises :class:`ReplayTimeout`
        after ``timeout`` seconds with the position reached.
        """
        deadline = time.monotonic() + timeout
        doing = "wait for replay"

        async def run() -> int:
            async with self._connect(doing) as conn, conn.cursor() as cur:
                target = lsn if isinstance(lsn, int) else await lsn

                async def replayed_now() -> int | None:
                    async with asyncio.timeout(self.statement_timeout + 2):
                        await cur.execute("SELECT pg_last_wal_replay_lsn()::text")
                        row = await cur.fetchone()
                    return _lsn_or_none(None if row is None else row[0])

                return await self._replayed_to(
                    target, await replayed_now(), replayed_now, deadline=deadline, timeout=timeout
                )

        return await self._bounded(run(), doing, waits=timeout)

    async def _replayed_to(
        self,
        target: int,
        replayed: int | None,
        replayed_now: Callable[[], Awaitable[int | None]],
        *,
        deadline: float,
        timeout: float,
    ) -> int:
        """From ``replayed`` (a position just read), ``replayed_now()`` every 20 ms until this
        standby has replayed ``target``; returns the position then. Raises :class:`ReplayTimeout`
        at ``deadline`` (monotonic; ``timeout`` is the wait it ends, for the message)."""
        while replayed is None or replayed < target:
            if time.monotonic() >= deadline:
                shown = "nothing" if replayed is None else format_lsn(replayed)
                raise ReplayTimeout(
                    f"postgres at {self.endpoint} replayed {shown}, not "
                    f"{format_lsn(target)}, within {timeout:g}s",
                    target_lsn=target,
                    replayed_lsn=replayed,
                )
            await asyncio.sleep(_REPLAY_POLL_SECONDS)
            replayed = await replayed_now()
        return replayed

    async def replay_when_primary_stopped(
        self,
        primary_stopped: Callable[[], Awaitable[bool]],
        *,
        poll: float,
        stop_timeout: float,
        replay_timeout: float,
    ) -> FinalPosition:
        """On this standby, for a switchover: until ``primary_stopped()`` (the old primary
        refuses connections) and this standby no longer streams from it, polled every ``poll``
        seconds; then until it has replayed everything it received (a clean shutdown sends the
        last WAL to a streaming standby). Both on one connection, opened before the old primary
        stops: the write outage lasts while this waits, and a new TLS connection (an observation)
        after the refusal, then another for the replay, cost tens of milliseconds under load.

        Returns at once, with ``in_recovery=False``, when this instance is not in recovery.
        Raises :class:`PrimaryNotStopped` after ``stop_timeout``, :class:`ReplayTimeout` after
        ``replay_timeout`` more; a lost connection to this standby raises like any call."""
        doing = "wait for the old primary to stop"

        async def row(cur: Any) -> dict[str, Any]:
            async with asyncio.timeout(self.statement_timeout + 2):
                await cur.execute(_STREAM_SQL)
                found = await cur.fetchone()
            assert found is not None
            return dict(found)

        async def run() -> FinalPosition:
            deadline = time.monotonic() + stop_timeout
            async with self._connect(doing) as conn, conn.cursor(row_factory=dict_row) as cur:
                while True:
                    # Only a closed port counts (a stopping instance still accepts connections),
                    # and a refusal alone proves nothing: this standby must have lost its stream.
                    if await primary_stopped():
                        seen = await row(cur)
                        if not seen["in_recovery"]:
                            return FinalPosition(False, None, None)
                        if seen["receiver_status"] != "streaming":
                            break
                    if time.monotonic() >= deadline:
                        raise PrimaryNotStopped(
                            f"the primary of postgres at {self.endpoint} did not stop within "
                            f"{stop_timeout:g}s"
                        )
                    await asyncio.sleep(poll)
                received = _lsn_or_none(seen["received"])
                replayed = _lsn_or_none(seen["replayed"])
                if received is not None:

                    async def replayed_now() -> int | None:
                        return _lsn_or_none((await row(cur))["replayed"])

                    replayed = await self._replayed_to(
                        received,
                        replayed,
                        replayed_now,
                        deadline=time.monotonic() + replay_timeout,
                        timeout=replay_timeout,
                    )
                return FinalPosition(True, received, replayed)

        return await self._bounded(run(), doing, waits=stop_timeout + replay_timeout)

    async def promote(self, wait_seconds: int = 60, *, checkpoint: bool = True) -> PromotionResult:
        """Promote this standby: ``pg_promote(wait => false)``, then ``pg_is_in_recovery()`` on
        the same connection every 10 ms until it is out of recovery (``pg_promote(wait => true)``
        checks only every 100 ms, a tenth of a second of write outage for nothing), then its
        timeline on that connection; then, unless ``checkpoint`` is False, a checkpoint.

        Idempotent: an instance that already is a primary is reported with ``promoted=False``.
        The checkpoint makes the new timeline visible in the control file, which ``pg_rewind``
        reads when the old primary rejoins; a caller that has more urgent work first (the
        operator moves the Services to the new primary) passes ``checkpoint=False`` and calls
        :meth:`checkpoint` itself before the old primary rejoins. Its failure does not undo the
        promotion and is reported in ``checkpointed`` (False also when none was asked for).
        """
        started = time.monotonic()
        saved = self.statement_timeout

        async def run() -> tuple[bool, int]:
            async with self._connect("promote") as conn, conn.cursor() as cur:
                await cur.execute("SELECT pg_is_in_recovery()")
                row = await cur.fetchone()
                promoted = row is not None and bool(row[0])
                if promoted:
                    await cur.execute("SELECT pg_promote(wait => false)")
                    signalled = await cur.fetchone()
                    if signalled is None or not signalled[0]:
                        raise PromotionFailed(
                            f"postgres at {self.endpoint}: pg_promote could not signal the "
                            "promotion"
                        )
                    deadline = time.monotonic() + wait_seconds
                    while True:
                        await cur.execute("SELECT pg_is_in_recovery()")
                        row = await cur.fetchone()
                        if row is not None and not row[0]:
                            break
                        if time.monotonic() >= deadline:
                            raise PromotionFailed(
                                f"postgres at {self.endpoint}: the promotion did not finish "
                                f"within {wait_seconds}s"
                            )
                        await asyncio.sleep(_PROMOTE_POLL_SECONDS)
                # Out of recovery: the timeline WAL is written on now (what observe() reports).
                await cur.execute(_PRIMARY_SQL)
                timeline = await cur.fetchone()
                assert timeline is not None
                return promoted, int(timeline[1])

        client = PostgresClient(
            self.endpoint,
            password=self.password,
            tls=self.tls,
            user=self.user,
            dbname=self.dbname,
            connect_timeout=self.connect_timeout,
            statement_timeout=max(saved, wait_seconds + 5.0),
        )
        try:
            promoted, timeline = await client._bounded(run(), "promote")
        except PromotionFailed:
            raise
        except PostgresError as exc:
            raise PromotionFailed(f"promotion failed: {exc}") from None
        duration = time.monotonic() - started
        checkpointed = False
        if checkpoint:
            try:
                await self.checkpoint()
                checkpointed = True
            except PostgresError:
                pass
        return PromotionResult(
            promoted=promoted,
            timeline=timeline,
            checkpointed=checkpointed,
            duration_seconds=duration,
        )

    async def create_slot_if_missing(self, name: str) -> bool:
        """Create the physical slot ``name`` unless it exists; True when it was created.

        A new primary has no slot for its peer (slots are not replicated): the operator creates
        ``gocdha_<old primary side>`` right after promotion.
        """
        if not name.startswith(SLOT_PREFIX) or not name.replace("_", "").isalnum():
            raise ValueError(f"{name!r} is not a gocdha replication slot name")
        created = await self._scalar(
            "SELECT count(*) FROM (SELECT pg_create_physical_replication_slot(%s, true) "
            "WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)) AS c",
            (name, name),
            "create slot",
        )
        return bool(created)
