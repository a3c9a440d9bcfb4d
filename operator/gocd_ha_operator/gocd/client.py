"""What the operator reads from GoCD and from the sync agent, and how it becomes ``configSync``.

Two layers, kept apart so the decisions can be tested without a network:

- **Pure mapping** (``config_sync_from_dashboard``, ``config_sync_from_agent_status``,
  ``config_sync_from_error``, ``parse_gocd_time``, ``bc_api_exposure_warning``): payload in,
  status dict out. The current time is a parameter; nothing here reads a clock.
- **I/O** (``check_health``, ``fetch_bc_dashboard``, ``fetch_sync_agent_status`` and the
  ``read_*`` wrappers): aiohttp with a total timeout on every request, so a stuck server costs a
  bounded wait and never a hung handler. Failures are typed (``GoCDClientError`` subclasses, each
  carrying the ``reason`` the status should show); the ``read_*`` wrappers turn them into a
  ``configSync`` dict, because "unreachable" is a status, not a crash.

The sync agent is read over HTTPS only, verified fully (``VerifiedServer``: the cluster CA and
the Service name, whichever address is dialled); a plain ``http://`` URL is refused before
anything is sent, so the token never leaves unencrypted. GoCD's own endpoints (health, the Warm
business-continuity dashboard) are plain HTTP: GoCD 20.6 and later serve no HTTPS at all, and the
HTTPS port of older versions carries a certificate GoCD made for itself (docs/architecture.md §17).

Neither layer ever puts the token or any file content into a message.

The ``configSync`` dict is the CRD status shape (camelCase, exactly these keys)::

    {"mode": "Warm"|"Cold", "source": url, "setupStatus": str|None,
     "lastSyncTime": RFC3339|None, "primaryUpdateTime": RFC3339|None,
     "files": [{"name", "primaryChecksum", "standbyChecksum", "inSync"}],
     "errors": [str], "synced": bool, "reason": CamelCase, "message": str}

Warm checksums are GoCD's MD5s; Cold checksums are SHA-256 (source file vs. mirrored copy).
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final, Literal, TypedDict

import aiohttp

from gocd_ha_operator.api.constants import GOCD_BC_DASHBOARD_PATH, GOCD_HEALTH_PATH
from gocd_ha_operator.gocd.mirror import CONFIG_DIRNAME, EXTERNAL_PLUGINS_DIRNAME, rfc3339
from gocd_ha_operator.gocd.token import BCToken

Mode = Literal["Warm", "Cold"]

#: Path of the sync agent's status endpoint (see ``sync_agent``).
SYNC_AGENT_STATUS_PATH: Final = "/status"
DEFAULT_TIMEOUT_SECONDS: Final = 10.0
#: Upper bound on a response body: these are small JSON documents, anything bigger is wrong.
MAX_BODY_BYTES: Final = 2 * 1024 * 1024
#: Keep status small: GoCD itself kept the last five sync errors.
MAX_ERRORS: Final = 5
MAX_ERROR_CHARS: Final = 500

#: GoCD's ``ConfigFileType`` keys in ``dashboard.json`` -> logical names (as in the Cold mirror).
BC_CONFIG_FILE_KEYS: Final[dict[str, str]] = {
    "CRUISE_CONFIG_XML": f"{CONFIG_DIRNAME}/cruise-config.xml",
    "AES_CIPHER": f"{CONFIG_DIRNAME}/cipher.aes",
    "JETTY_XML": f"{CONFIG_DIRNAME}/jetty.xml",
    "USER_FEATURE_TOGGLE": f"{CONFIG_DIRNAME}/go.feature.toggles",
}

#: First GoCD version with business continuity in core (and the unauthenticated primary API).
BC_IN_CORE_SINCE: Final = (20, 6, 0)
#: First GoCD version where business continuity is disabled.
BC_DISABLED_SINCE: Final = (21, 3, 0)
BC_ADVISORY: Final = "GHSA-f8j3-9pqx-h88g"


class ConfigSyncFile(TypedDict):
    name: str
    primaryChecksum: str | None
    standbyChecksum: str | None
    inSync: bool


class ConfigSyncReading(TypedDict):
    """One reading of the standby's config sync, in the status' camelCase keys.

    A plain dict because it is produced from JSON (the BC dashboard, the sync agent) and turned
    into the status model ``api.status.ConfigSyncStatus`` by the controller; the two names differ
    so that a reading is never mistaken for what the status shows.
    """

    mode: Mode
    source: str
    setupStatus: str | None
    lastSyncTime: str | None
    primaryUpdateTime: str | None
    files: list[ConfigSyncFile]
    errors: list[str]
    synced: bool
    reason: str
    message: str


# --- typed errors -------------------------------------------------------------------------------


class GoCDClientError(Exception):
    """A read failed; ``reason`` is the ``configSync.reason`` it stands for."""

    reason: str = "Unreachable"


class GoCDUnreachableError(GoCDClientError):
    """No HTTP answer: connection refused, DNS, timeout, TLS."""

    reason = "Unreachable"


class GoCDUnauthorizedError(GoCDClientError):
    """HTTP 401: the token the operator holds is not the one the server has."""

    reason = "Unauthorized"


class BCTokenInvalidError(GoCDClientError):
    """HTTP 422 from the dashboard: the server's token file is missing or invalid."""

    reason = "TokenInvalid"


class GoCDCertificateError(GoCDClientError):
    """The TLS handshake failed verification: not signed by the cluster CA, not for the name
    dialled, expired. The token was not sent."""

    reason = "CertificateRejected"


class GoCDInvalidResponseError(GoCDClientError):
    """An HTTP answer that is not what the endpoint documents (status or body)."""

    reason = "InvalidResponse"


# --- pure helpers -------------------------------------------------------------------------------

_MONTHS: Final = {
    m: i + 1
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
_GSON_DATE_RE: Final = re.compile(
    r"^(?P<mon>[A-Za-z]{3})[A-Za-z]*\.?\s+(?P<day>\d{1,2}),\s*(?P<year>\d{4}),?\s+"
    r"(?P<h>\d{1,2}):(?P<m>\d{2}):(?P<s>\d{2})(?:\s*(?P<ampm>[AaPp]\.?[Mm]\.?))?$"
)


def parse_gocd_time(value: Any, *, now: datetime) -> datetime | None:
    """Parse a time as GoCD's dashboard wrote it; ``None`` for null or empty.

    Accepted: Gson's ``"MMM d, YYYY HH:mm:ss"`` (also with a comma after the year or AM/PM, as
    other Gson/JDK defaults print it), epoch milliseconds (number or digit string) and ISO 8601.
    Times without a zone are taken as UTC (GoCD printed server-local time; the official image
    runs in UTC).

    ``YYYY`` in GoCD's pattern is the *week* year: in the last days of December it can print the
    next year, and in locales whose week 1 starts later, early January can print the previous
    one. For December and January dates the year is therefore chosen among the printed year and
    its neighbour as the one closest to ``now``. Raises ``ValueError`` for anything else.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    if not isinstance(value, str):
        raise ValueError(f"not a time: {value!r}")
    text = value.replace("\u202f", " ").replace("\xa0", " ").strip()
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    match = _GSON_DATE_RE.match(text)
    if match:
        month = _MONTHS.get(match["mon"].lower())
        if month is None:
            raise ValueError(f"unknown month in {value!r}")
        hour = int(match["h"])
        if match["ampm"]:
            pm = match["ampm"][0] in "Pp"
            hour = hour % 12 + (12 if pm else 0)
        year = int(match["year"])
        candidates = [year]
        if month == 12:
            candidates.append(year - 1)
        elif month == 1:
            candidates.append(year + 1)
        parsed = [
            datetime(
                y, month, int(match["day"]), hour, int(match["m"]), int(match["s"]), tzinfo=UTC
            )
            for y in candidates
        ]
        return min(parsed, key=lambda moment: abs(moment - now))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"unrecognised time format: {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_plugin_status(value: Any) -> dict[str, str]:
    """GoCD's ``pluginStatus`` string ``"name=md5, name2=md5"`` as ``{name: md5}``."""
    if not isinstance(value, str) or not value.strip():
        return {}
    plugins: dict[str, str] = {}
    for item in value.split(","):
        name, sep, checksum = item.strip().rpartition("=")
        if sep and name.strip():
            plugins[name.strip()] = checksum.strip()
    return plugins


def bc_api_exposure_warning(version: tuple[int, int, int]) -> str | None:
    """The warning for a GoCD version whose primary sync API is unauthenticated, else ``None``.

    In 20.6.0-21.2.x the primary's ``/go/add-on/business-continuity/api/*`` answered anyone:
    ``cipher.aes``, ``cruise-config.xml`` and plugin jars could be downloaded without
    credentials (advisory GHSA-f8j3-9pqx-h88g). Warm mode needs that API, so the operator says
    so in a condition and an Event.
    """
    if BC_IN_CORE_SINCE <= version < BC_DISABLED_SINCE:
        shown = ".".join(str(part) for part in version)
        return (
            f"GoCD {shown} serves its business-continuity sync API "
            "(/go/add-on/business-continuity/api/) without authentication, including cipher.aes "
            f"and cruise-config.xml (advisory {BC_ADVISORY}). Keep that path off every Ingress "
            "and route (see docs/gocd-standby-modes.md), or use GoCD >= 21.3 in Cold mode."
        )
    return None


def _clean_errors(raw: Any) -> list[str]:
    if not isinstance(raw, list):
        return []
    errors = [str(item)[:MAX_ERROR_CHARS] for item in raw if item is not None and str(item)]
    return errors[-MAX_ERRORS:]


def _file(name: str, primary: str | None, standby: str | None) -> ConfigSyncFile:
    return {
        "name": name,
        "primaryChecksum": primary,
        "standbyChecksum": standby,
        "inSync": primary is not None and primary == standby,
    }


def _verdict(
    *,
    files: list[ConfigSyncFile],
    errors: list[str],
    last_sync: datetime | None,
    now: datetime,
    max_age_seconds: float,
    setup_incomplete: bool = False,
    primary_error: str | None = None,
) -> tuple[bool, str, str]:
    """``(synced, reason, message)``: synced = all files equal and the last sync fresh enough.

    When not synced, the reason is the most fundamental cause, so the condition tells a human
    where to look first: setup, then the primary link, then sync errors, then a sync that never
    happened, then differing files, then an old sync.
    """
    differing = [f["name"] for f in files if not f["inSync"]]
    age = (now - last_sync).total_seconds() if last_sync else None
    fresh = age is not None and age <= max_age_seconds
    if files and not differing and fresh and last_sync is not None:
        return True, "Synced", f"{len(files)} files in sync; last sync {rfc3339(last_sync)}"
    if setup_incomplete:
        return (
            False,
            "SetupIncomplete",
            "the standby reports its business-continuity setup as incomplete",
        )
    if primary_error:
        return False, "PrimaryUnreachable", f"the standby cannot read the primary: {primary_error}"
    if errors:
        return False, "SyncErrors", f"{len(errors)} sync errors; latest: {errors[-1]}"
    if last_sync is None:
        return False, "SyncStale", "no successful sync has been reported yet"
    if not files:
        return False, "FilesDiffer", "no files reported"
    if differing:
        shown = ", ".join(differing[:5]) + (", ..." if len(differing) > 5 else "")
        return False, "FilesDiffer", f"{len(differing)} of {len(files)} files differ: {shown}"
    assert age is not None
    return (
        False,
        "SyncStale",
        f"last successful sync {rfc3339(last_sync)} is {age:.0f}s old "
        f"(more than {max_age_seconds:.0f}s)",
    )


def config_sync_from_dashboard(
    payload: Mapping[str, Any],
    *,
    source: str,
    now: datetime,
    max_age_seconds: float,
) -> ConfigSyncReading:
    """Map the Warm standby's ``dashboard.json`` into ``configSync``.

    Files compared: the four config files (primary ``{"md5": …}`` objects vs. standby MD5
    strings; a file absent on both sides, e.g. no ``go.feature.toggles``, is left out) and the
    external plugins of both ``pluginStatus`` strings.
    """
    primary = payload.get("primaryServerDetails")
    standby = payload.get("standbyServerDetails")
    primary = primary if isinstance(primary, Mapping) else {}
    standby = standby if isinstance(standby, Mapping) else {}
    errors = _clean_errors(payload.get("syncErrors"))
    primary_error = primary.get("error")
    primary_error = str(primary_error)[:MAX_ERROR_CHARS] if primary_error else None
    if primary_error:
        errors = [*errors, f"primary: {primary_error}"][-MAX_ERRORS:]

    def md5_of(value: Any) -> str | None:
        if isinstance(value, Mapping):
            value = value.get("md5")
        return value if isinstance(value, str) and value else None

    files: list[ConfigSyncFile] = []
    for key, name in BC_CONFIG_FILE_KEYS.items():
        primary_md5, standby_md5 = md5_of(primary.get(key)), md5_of(standby.get(key))
        if primary_md5 is None and standby_md5 is None:
            continue
        files.append(_file(name, primary_md5, standby_md5))
    primary_plugins = parse_plugin_status(primary.get("pluginStatus"))
    standby_plugins = parse_plugin_status(standby.get("pluginStatus"))
    for plugin in sorted(set(primary_plugins) | set(standby_plugins)):
        files.append(
            _file(
                f"{EXTERNAL_PLUGINS_DIRNAME}/{plugin}",
                primary_plugins.get(plugin),
                standby_plugins.get(plugin),
            )
        )

    last_sync, primary_update = None, None
    try:
        last_sync = parse_gocd_time(standby.get("lastUpdateTime"), now=now)
    except ValueError as exc:
        errors.append(f"standby lastUpdateTime: {exc}")
    try:
        primary_update = parse_gocd_time(primary.get("lastConfigUpdateTime"), now=now)
    except ValueError as exc:
        errors.append(f"primary lastConfigUpdateTime: {exc}")

    setup_status = payload.get("setupStatus")
    setup_status = str(setup_status) if setup_status is not None else None
    synced, reason, message = _verdict(
        files=files,
        errors=errors,
        last_sync=last_sync,
        now=now,
        max_age_seconds=max_age_seconds,
        setup_incomplete=setup_status is not None and setup_status != "success",
        primary_error=primary_error,
    )
    return {
        "mode": "Warm",
        "source": source,
        "setupStatus": setup_status,
        "lastSyncTime": rfc3339(last_sync) if last_sync else None,
        "primaryUpdateTime": rfc3339(primary_update) if primary_update else None,
        "files": files,
        "errors": errors,
        "synced": synced,
        "reason": reason,
        "message": message,
    }


def config_sync_from_agent_status(
    payload: Mapping[str, Any],
    *,
    source: str,
    now: datetime,
    max_age_seconds: float,
) -> ConfigSyncReading:
    """Map the Cold sync agent's ``/status`` into ``configSync``.

    "Primary" is the primary server's file (``sourceSha256``) and "standby" is the copy in the
    mirror that the standby would restore (``mirrorSha256``).
    """
    errors = _clean_errors(payload.get("errors"))
    files: list[ConfigSyncFile] = []
    raw_files = payload.get("files")
    for item in raw_files if isinstance(raw_files, list) else []:
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            source_sha, mirror_sha = item.get("sourceSha256"), item.get("mirrorSha256")
            files.append(
                _file(
                    item["name"],
                    source_sha if isinstance(source_sha, str) else None,
                    mirror_sha if isinstance(mirror_sha, str) else None,
                )
            )
    last_sync, source_update = None, None
    try:
        last_sync = parse_gocd_time(payload.get("lastSyncTime"), now=now)
        source_update = parse_gocd_time(payload.get("sourceUpdateTime"), now=now)
    except ValueError as exc:
        errors.append(f"sync agent status: {exc}")
    synced, reason, message = _verdict(
        files=files, errors=errors, last_sync=last_sync, now=now, max_age_seconds=max_age_seconds
    )
    return {
        "mode": "Cold",
        "source": source,
        "setupStatus": None,
        "lastSyncTime": rfc3339(last_sync) if last_sync else None,
        "primaryUpdateTime": rfc3339(source_update) if source_update else None,
        "files": files,
        "errors": errors,
        "synced": synced,
        "reason": reason,
        "message": message,
    }


def config_sync_from_error(mode: Mode, source: str, error: GoCDClientError) -> ConfigSyncReading:
    """``configSync`` for a read that failed: nothing is known about the files."""
    return {
        "mode": mode,
        "source": source,
        "setupStatus": None,
        "lastSyncTime": None,
        "primaryUpdateTime": None,
        "files": [],
        "errors": [str(error)],
        "synced": False,
        "reason": error.reason,
        "message": str(error),
    }


# --- I/O ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthResult:
    healthy: bool
    message: str


@dataclass(frozen=True)
class VerifiedServer:
    """How an HTTPS server is verified: the CA (PEM) its certificate must chain to and the name
    it must carry. ``server_name`` is the Service name (``<svc>.<ns>.svc``), also when the URL
    dials an address (``GOCDHA_ENDPOINTS``), as libpq's ``hostaddr`` does for Postgres."""

    ca_pem: bytes
    server_name: str

    def __repr__(self) -> str:
        return f"VerifiedServer(server_name={self.server_name!r}, ca={len(self.ca_pem)}B)"


#: Contexts kept, one per cluster CA: above the clusters one operator serves (benchmarked with
#: 200), so an observation does not rebuild one (a CA load is costly; a context is a few KiB).
VERIFYING_CONTEXTS_KEPT: Final = 512


@lru_cache(maxsize=VERIFYING_CONTEXTS_KEPT)
def verifying_context(ca_pem: bytes) -> ssl.SSLContext:
    """A client context trusting ``ca_pem`` only (not the system store), with hostname checks
    and TLS 1.2 or later. Cached per CA: a context is reusable and costly to build."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca_pem.decode("ascii"))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _client_error(exc: aiohttp.ClientError) -> str:
    """``exc`` described by what went wrong, for status: aiohttp's own text of a connection
    error names the TLS context by its memory address (``ssl:<ssl.SSLContext object at
    0x…>``), which differs between observations of the same refusal and so rewrote status at
    every one (issue #16)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        why = error.strerror or str(error) or type(error).__name__
        return f"{type(exc).__name__}: Cannot connect to host {exc.host}:{exc.port} [{why}]"
    return f"{type(exc).__name__}: {exc}"


def _join(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + path


async def _get(
    url: str,
    *,
    token: BCToken | None,
    timeout: float,
    session: aiohttp.ClientSession | None,
    what: str,
    verify: VerifiedServer | None = None,
) -> tuple[int, bytes]:
    """GET ``url``; return status and (bounded) body. Transport failures -> Unreachable, a
    certificate that fails ``verify`` -> :class:`GoCDCertificateError`."""
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = token.basic_auth_header()
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    tls: dict[str, Any] = {}
    if verify is not None:
        tls = {"ssl": verifying_context(verify.ca_pem), "server_hostname": verify.server_name}
    own_session = session is None
    active = session or aiohttp.ClientSession()
    try:
        async with active.get(
            url, headers=headers, timeout=client_timeout, allow_redirects=False, **tls
        ) as response:
            body = await response.content.read(MAX_BODY_BYTES + 1)
            if len(body) > MAX_BODY_BYTES:
                raise GoCDInvalidResponseError(f"{what} at {url}: response larger than expected")
            return response.status, body
    except TimeoutError:
        raise GoCDUnreachableError(f"{what} at {url}: no answer within {timeout:g}s") from None
    except aiohttp.ClientConnectorCertificateError as exc:
        name = verify.server_name if verify is not None else url
        raise GoCDCertificateError(
            f"{what} at {url}: its certificate failed verification for {name} against the "
            f"cluster CA ({_certificate_reason(exc)}); the token was not sent"
        ) from None
    except aiohttp.ClientSSLError as exc:
        raise GoCDUnreachableError(
            f"{what} at {url}: TLS handshake failed ({_client_error(exc)}); the token was not sent"
        ) from None
    except aiohttp.ClientError as exc:
        raise GoCDUnreachableError(f"{what} at {url}: {_client_error(exc)}") from None
    finally:
        if own_session:
            await active.close()


def _certificate_reason(exc: aiohttp.ClientConnectorCertificateError) -> str:
    error = exc.certificate_error
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return str(error.verify_message)
    return str(error)


def _json_object(body: bytes, *, url: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise GoCDInvalidResponseError(f"{what} at {url}: the response is not JSON") from None
    if not isinstance(data, dict):
        raise GoCDInvalidResponseError(f"{what} at {url}: the response is not a JSON object")
    return data


async def check_health(
    base_url: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    session: aiohttp.ClientSession | None = None,
) -> HealthResult:
    """GoCD's unauthenticated health endpoint: healthy when it answers ``{"health": "OK"}``."""
    url = _join(base_url, GOCD_HEALTH_PATH)
    try:
        status, body = await _get(url, token=None, timeout=timeout, session=session, what="health")
        if status != 200:
            return HealthResult(False, f"health check at {url} answered HTTP {status}")
        data = _json_object(body, url=url, what="health")
    except GoCDClientError as exc:
        return HealthResult(False, str(exc))
    health = data.get("health")
    if health != "OK":
        return HealthResult(False, f"health check at {url} reports {str(health)[:100]!r}")
    return HealthResult(True, "OK")


async def fetch_bc_dashboard(
    base_url: str,
    token: BCToken,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    session: aiohttp.ClientSession | None = None,
) -> dict[str, Any]:
    """The Warm standby's ``dashboard.json``; raises a ``GoCDClientError`` subclass on failure."""
    url = _join(base_url, GOCD_BC_DASHBOARD_PATH)
    what = "business-continuity dashboard"
    status, body = await _get(url, token=token, timeout=timeout, session=session, what=what)
    if status == 401:
        raise GoCDUnauthorizedError(
            f"{what} at {url} refused the token (HTTP 401): the operator's token differs from "
            "the server's business-continuity-token file"
        )
    if status == 422:
        raise BCTokenInvalidError(
            f"{what} at {url} answered HTTP 422: the server's business-continuity-token file "
            "is missing or does not hold exactly one credential"
        )
    if status != 200:
        raise GoCDInvalidResponseError(
            f"{what} at {url} answered HTTP {status} (is the server running in standby mode?)"
        )
    return _json_object(body, url=url, what=what)


async def fetch_sync_agent_status(
    base_url: str,
    token: BCToken,
    *,
    verify: VerifiedServer,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    session: aiohttp.ClientSession | None = None,
) -> dict[str, Any]:
    """The Cold sync agent's ``/status`` over verified HTTPS; raises a ``GoCDClientError``
    subclass on failure and ``ValueError`` for a URL that is not ``https://``."""
    if not base_url.startswith("https://"):
        raise ValueError(f"the sync agent is read over HTTPS only, not {base_url!r}")
    url = _join(base_url, SYNC_AGENT_STATUS_PATH)
    what = "sync agent status"
    status, body = await _get(
        url, token=token, timeout=timeout, session=session, what=what, verify=verify
    )
    if status == 401:
        raise GoCDUnauthorizedError(f"{what} at {url} refused the token (HTTP 401)")
    if status != 200:
        raise GoCDInvalidResponseError(f"{what} at {url} answered HTTP {status}")
    return _json_object(body, url=url, what=what)


def _now_or(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


async def read_bc_dashboard(
    base_url: str,
    token: BCToken,
    *,
    max_age_seconds: float,
    now: datetime | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    session: aiohttp.ClientSession | None = None,
) -> ConfigSyncReading:
    """Warm mode: read the standby's dashboard into ``configSync`` (failures become reasons)."""
    source = _join(base_url, GOCD_BC_DASHBOARD_PATH)
    try:
        payload = await fetch_bc_dashboard(base_url, token, timeout=timeout, session=session)
    except GoCDClientError as exc:
        return config_sync_from_error("Warm", source, exc)
    return config_sync_from_dashboard(
        payload, source=source, now=_now_or(now), max_age_seconds=max_age_seconds
    )


async def read_sync_agent_status(
    base_url: str,
    token: BCToken,
    *,
    verify: VerifiedServer,
    max_age_seconds: float,
    now: datetime | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    session: aiohttp.ClientSession | None = None,
) -> ConfigSyncReading:
    """Cold mode: read the sync agent's status into ``configSync`` (failures become reasons)
    over HTTPS verified by ``verify``."""
    source = _join(base_url, SYNC_AGENT_STATUS_PATH)
    try:
        payload = await fetch_sync_agent_status(
            base_url, token, verify=verify, timeout=timeout, session=session
        )
    except GoCDClientError as exc:
        return config_sync_from_error("Cold", source, exc)
    return config_sync_from_agent_status(
        payload, source=source, now=_now_or(now), max_age_seconds=max_age_seconds
    )
