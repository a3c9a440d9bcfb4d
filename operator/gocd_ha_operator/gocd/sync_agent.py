"""``gocd-ha-operator sync-agent``: the Cold-mode mirror writer, a sidecar of the primary GoCD.

Current GoCD (>= 21.3) has no business-continuity feature, so a standby server cannot pull its
configuration from the primary. This agent does what that feature did, from the other end: every
``--interval`` seconds it mirrors the same file set (see ``mirror``) from the primary's
``/godata`` (mounted read-only) into ``/shared/gocd``; the standby restores it when promoted.

It also serves ``GET /status`` so the operator can fill ``status.configSync``: sync times,
checksums of the source and of the mirror, and recent errors. The endpoint is served over HTTPS
only (TLS 1.2 or later; there is no plain-HTTP listener), with the certificate the operator issues
from the cluster CA for the GoCD side Services (``--tls-cert-file``/``--tls-key-file``,
docs/architecture.md §17); the agent reloads a renewed certificate after the cycle in which its
files changed, so new connections get it without a restart. The endpoint requires the
business-continuity token as HTTP Basic credentials, never serves file contents, and answers 404
to everything else. A failing cycle (unreadable source, full volume) is reported there and in the
log, and the loop carries on; SIGTERM ends the process after the cycle in progress.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import signal
import ssl
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from gocd_ha_operator.api.constants import (
    BC_TOKEN_KEY,
    GOCD_DATA_DIR,
    GOCD_MIRROR_SUBDIR,
    SHARED_MOUNT,
    SIDES,
    SYNC_AGENT_PORT,
    SYNC_TOKEN_DIR,
)
from gocd_ha_operator.gocd.mirror import (
    FORMAT_VERSION,
    FileEntry,
    Manifest,
    ManifestError,
    read_manifest,
    rfc3339,
    snapshot,
)
from gocd_ha_operator.gocd.token import TokenFileError, read_token_file

log = logging.getLogger(__name__)

STATUS_PATH: Final = "/status"
#: How many recent errors ``/status`` keeps (GoCD's dashboard kept the last 5, too).
MAX_ERRORS: Final = 5
AUTH_REALM: Final = "gocd-ha-operator sync agent"
EXIT_USAGE: Final = 2


@dataclass(frozen=True)
class AgentConfig:
    source: Path
    target: Path
    token_file: Path
    host: str
    port: int
    interval_seconds: float
    side: str | None = None
    #: The serving certificate (PEM, may include intermediates) and its key. Required: the
    #: status endpoint is HTTPS only.
    tls_cert_file: Path = field(kw_only=True)
    tls_key_file: Path = field(kw_only=True)


class CertificateError(Exception):
    """The serving certificate or key cannot be loaded (message: the path and the reason)."""


class ReloadingCertificate:
    """The server side TLS of the status endpoint, with the certificate reloaded when its files
    change.

    ``context`` is what the listener was created with; its SNI callback (called for every
    ClientHello, with or without a server name) hands each new handshake the context built from
    the newest files that loaded. A renewal therefore reaches every new connection without a
    restart, connections already open keep their certificate, and a renewal that does not load
    (the key does not match, files caught mid-update) is logged and the previous context kept:
    the endpoint never serves a half-loaded pair.
    """

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.reloads = 0
        self._current, self._loaded = self._build()
        self.context = self._current
        self.context.sni_callback = self._select

    def _select(self, connection: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        if connection.context is not self._current:
            connection.context = self._current

    def _fingerprint(self) -> bytes:
        try:
            digest = hashlib.sha256(self.cert_file.read_bytes())
            digest.update(self.key_file.read_bytes())
        except OSError as exc:
            raise CertificateError(
                f"cannot read the TLS certificate: {describe_error(exc)}"
            ) from None
        return digest.digest()

    def _build(self) -> tuple[ssl.SSLContext, bytes]:
        """A new server context from the files, and the fingerprint of what it holds."""
        before = self._fingerprint()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except ssl.SSLError as exc:
            # The reason only (e.g. KEY_VALUES_MISMATCH): never the file content.
            raise CertificateError(
                f"cannot load the TLS certificate {self.cert_file} with key {self.key_file}: "
                f"{exc.reason or exc.strerror or type(exc).__name__}"
            ) from None
        except OSError as exc:
            raise CertificateError(
                f"cannot read the TLS certificate: {describe_error(exc)}"
            ) from None
        if self._fingerprint() != before:
            raise CertificateError(f"{self.cert_file} or its key changed while being loaded")
        return context, before

    def reload_if_changed(self) -> bool:
        """Load the files again when they differ from what is served; True when reloaded."""
        try:
            if self._fingerprint() == self._loaded:
                return False
            self._current, self._loaded = self._build()
        except CertificateError as exc:
            log.warning("keeping the TLS certificate in use: %s", exc)
            return False
        self.reloads += 1
        log.info("reloaded the TLS certificate from %s", self.cert_file)
        return True


@dataclass
class AgentState:
    """What ``/status`` reports; updated only by the sync loop."""

    manifest: Manifest | None = None
    last_sync_time: datetime | None = None
    last_attempt_time: datetime | None = None
    source_files: dict[str, FileEntry] = field(default_factory=dict)
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_ERRORS))

    def to_json(self, *, side: str | None, interval_seconds: float) -> dict[str, Any]:
        """The ``/status`` body: names, checksums, sizes and times; never a file's content."""
        mirror = dict(self.manifest.files) if self.manifest else {}
        names = sorted(set(mirror) | set(self.source_files))
        files = [
            {
                "name": name,
                "sourceSha256": self.source_files[name].sha256
                if name in self.source_files
                else None,
                "mirrorSha256": mirror[name].sha256 if name in mirror else None,
                "size": (self.source_files.get(name) or mirror[name]).size,
            }
            for name in names
        ]
        newest = max((entry.mtime_ns for entry in self.source_files.values()), default=None)
        return {
            "formatVersion": FORMAT_VERSION,
            "side": side,
            "intervalSeconds": interval_seconds,
            "lastSyncTime": rfc3339(self.last_sync_time) if self.last_sync_time else None,
            "lastAttemptTime": rfc3339(self.last_attempt_time) if self.last_attempt_time else None,
            "mirrorSyncTime": rfc3339(self.manifest.sync_time) if self.manifest else None,
            "generation": self.manifest.generation if self.manifest else None,
            "sourceUpdateTime": rfc3339(datetime.fromtimestamp(newest / 1e9, UTC))
            if newest is not None
            else None,
            "files": files,
            "errors": list(self.errors),
        }


def describe_error(exc: BaseException) -> str:
    """A log- and status-safe description: the OS error and the path, never file content."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{type(exc).__name__}: {exc.strerror}{where}"
    return f"{type(exc).__name__}: {exc}"


class SyncAgent:
    """The sync loop and the status server, in one asyncio process."""

    def __init__(self, config: AgentConfig, *, clock: Callable[[], datetime] | None = None):
        self.config = config
        #: Raises :class:`CertificateError` now, not at the first request.
        self.tls = ReloadingCertificate(config.tls_cert_file, config.tls_key_file)
        self.state = AgentState()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._runner: web.AppRunner | None = None
        #: Set once the status server listens; ``port`` is then the bound port.
        self.listening = asyncio.Event()
        self.port: int | None = None
        #: Set after each completed cycle (successful or not); tests and probes wait on it.
        self.cycle_done = asyncio.Event()
        self.cycles = 0

    # --- the sync loop ------------------------------------------------------------------------

    def _load_existing_manifest(self) -> None:
        """Report the mirror that is already there until this process has written its own."""
        try:
            self.state.manifest = read_manifest(self.config.target)
        except ManifestError as exc:
            self._record_error(f"existing manifest ignored: {exc}")
        except OSError as exc:
            self._record_error(f"cannot read the existing manifest: {describe_error(exc)}")

    def _record_error(self, message: str) -> None:
        stamped = f"[{rfc3339(self._clock())}] {message}"
        self.state.errors.append(stamped)
        log.warning("sync failed: %s", message)

    def sync_once(self) -> bool:
        """One mirror cycle (blocking I/O; run it in a thread). True when it succeeded."""
        started = self._clock()
        self.state.last_attempt_time = started
        observed: dict[str, FileEntry] = {}
        # Only a manifest this process wrote is trusted for the unchanged-file shortcut.
        previous = self.state.manifest if self.state.last_sync_time is not None else None
        try:
            manifest = snapshot(
                self.config.source,
                self.config.target,
                side=self.config.side,
                now=started,
                previous=previous,
                observed=observed,
                after_generation=self.state.manifest.generation if self.state.manifest else 0,
            )
        except Exception as exc:  # any failure is reported; the loop must go on
            self.state.source_files = observed
            self._record_error(describe_error(exc))
            return False
        changed = [
            name
            for name, entry in manifest.files.items()
            if previous is None or previous.files.get(name) != entry
        ]
        removed = sorted(set(previous.files) - set(manifest.files)) if previous else []
        if changed or removed:
            log.info(
                "mirror generation %d: %d files copied%s%s",
                manifest.generation,
                len(changed),
                f" ({', '.join(sorted(changed))})" if len(changed) <= 10 else "",
                f"; removed {', '.join(removed)}" if removed else "",
            )
        self.state.manifest = manifest
        self.state.source_files = observed
        self.state.last_sync_time = started
        self.state.errors.clear()
        return True

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.to_thread(self.sync_once)
            self.tls.reload_if_changed()  # the kubelet replaced a renewed Secret's files
            self.cycles += 1
            self.cycle_done.set()
            self.cycle_done.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.config.interval_seconds)

    # --- the status server --------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "GET" or request.path != STATUS_PATH:
            return web.json_response({"error": "not found"}, status=404)
        try:
            token = read_token_file(self.config.token_file)  # re-read: the Secret may rotate
        except TokenFileError as exc:
            log.error("cannot authenticate a status request: %s", exc)
            token = None
        if token is None or not token.matches_basic_auth(request.headers.get("Authorization")):
            return web.json_response(
                {"error": "unauthorized"},
                status=401,
                headers={"WWW-Authenticate": f'Basic realm="{AUTH_REALM}", charset="UTF-8"'},
            )
        body = self.state.to_json(
            side=self.config.side, interval_seconds=self.config.interval_seconds
        )
        return web.json_response(body, dumps=json.dumps)

    async def start_server(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port, ssl_context=self.tls.context)
        await site.start()
        self._runner = runner
        address = runner.addresses[0]
        self.port = int(address[1])
        self.listening.set()
        log.info(
            "status server listening on https://%s:%d%s", self.config.host, self.port, STATUS_PATH
        )

    async def stop_server(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def run(self, stop: asyncio.Event) -> None:
        """Serve and sync until ``stop`` is set; the cycle in progress is allowed to finish."""
        self._load_existing_manifest()
        await self.start_server()
        try:
            await self._loop(stop)
        finally:
            await self.stop_server()
        log.info("sync agent stopped")


# --- command line -----------------------------------------------------------------------------


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::]:8155`` for IPv6) into its parts, for argparse."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError("the interval must be greater than 0")
    return seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        type=Path,
        default=Path(GOCD_DATA_DIR),
        help="the primary's GoCD data dir, mounted read-only (default: %(default)s)",
    )
    parser.add_argument(
        "--target",
        type=Path,
        default=Path(SHARED_MOUNT) / GOCD_MIRROR_SUBDIR,
        help="the mirror on the shared volume (default: %(default)s)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=Path(SYNC_TOKEN_DIR) / BC_TOKEN_KEY,
        help="business-continuity token file guarding /status (default: %(default)s)",
    )
    parser.add_argument(
        "--listen",
        type=parse_listen,
        default=("0.0.0.0", SYNC_AGENT_PORT),  # noqa: S104 - a pod's sidecar serves the operator
        metavar="HOST:PORT",
        help=f"address of the status server (default: 0.0.0.0:{SYNC_AGENT_PORT})",
    )
    parser.add_argument(
        "--interval",
        type=positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="seconds between mirror cycles (default: %(default)s)",
    )
    parser.add_argument("--side", choices=SIDES, help="the side this agent runs on")
    parser.add_argument(
        "--tls-cert-file",
        type=Path,
        required=True,
        metavar="PATH",
        help="PEM certificate /status is served with (HTTPS only; reloaded when it changes)",
    )
    parser.add_argument(
        "--tls-key-file",
        type=Path,
        required=True,
        metavar="PATH",
        help="PEM private key of --tls-cert-file",
    )


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    host, port = args.listen
    return AgentConfig(
        source=args.source,
        target=args.target,
        token_file=args.token_file,
        host=host,
        port=port,
        interval_seconds=args.interval,
        side=args.side,
        tls_cert_file=args.tls_cert_file,
        tls_key_file=args.tls_key_file,
    )


async def run_until_signalled(agent: SyncAgent) -> None:
    """Run the agent until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await agent.run(stop)


def run(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = config_from_args(args)
    try:
        read_token_file(config.token_file)  # fail fast: an agent nobody can query is a mistake
    except TokenFileError as exc:
        print(f"sync-agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not config.source.is_dir():
        print(f"sync-agent: source {config.source} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    try:
        agent = SyncAgent(config)  # loads the certificate: a bad one fails here, not per request
    except CertificateError as exc:
        print(f"sync-agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        asyncio.run(run_until_signalled(agent))
    except OSError as exc:  # e.g. the listen address is taken
        print(f"sync-agent: {describe_error(exc)}", file=sys.stderr)
        return 1
    return 0
