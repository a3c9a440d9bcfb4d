"""A STAND-IN for a GoCD server, for tests: it is not GoCD and runs none of GoCD's code.

A real GoCD server (a JVM, a database, minutes to start) cannot run in this project's CI, so the
tests that need one talk to this small aiohttp server on 127.0.0.1 instead. It serves only the
endpoints the operator reads, with the behaviour documented for GoCD 18.8-21.2 (research
gocd.md §1.3-1.4 and §3):

- ``GET /go/api/v1/health`` -> ``{"health": "OK"}`` (503 when ``healthy`` is False);
- ``GET /go/add-on/business-continuity/admin/dashboard.json`` -> the standby dashboard JSON,
  behind HTTP Basic auth with the configured token (realm ``GoCD Business Continuity``);
  401 without or with wrong credentials; 422 when the token file is "missing" (``token=None``);
  500 when the server is "not in standby mode" (``dashboard=None``), as GoCD threw then.

Usage::

    async with StandinGoCD(token=BCToken("bc", "badger"),
                           dashboard=synced_dashboard(now)) as gocd:
        await read_bc_dashboard(gocd.base_url, token, ...)
        gocd.dashboard = out_of_sync_dashboard(now)     # change the scenario at any time

The ``*_dashboard`` builders produce the payload shapes of ``DashBoardController`` with
GoCD's field names, MD5 strings and Gson dates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Self

from aiohttp import web

from gocd_ha_operator.api.constants import GOCD_BC_DASHBOARD_PATH, GOCD_HEALTH_PATH
from gocd_ha_operator.gocd.token import BCToken

BC_REALM = "GoCD Business Continuity"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def gson_date(moment: datetime, *, week_year: int | None = None) -> str:
    """``moment`` as GoCD's Gson printed it: ``"MMM d, YYYY HH:mm:ss"``.

    ``week_year`` overrides the printed year, to reproduce the ``YYYY`` week-year quirk.
    """
    year = week_year if week_year is not None else moment.year
    return f"{_MONTHS[moment.month - 1]} {moment.day}, {year} {moment:%H:%M:%S}"


def md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


#: A consistent set of config-file MD5s, keyed as GoCD's ``ConfigFileType``.
CONFIG_MD5S: dict[str, str] = {
    "CRUISE_CONFIG_XML": md5("<cruise schemaVersion='139'/>"),
    "AES_CIPHER": md5("cipher"),
    "JETTY_XML": md5("<jetty/>"),
}
PLUGIN_MD5S: dict[str, str] = {
    "kubernetes-elastic-agent.jar": md5("k8s plugin"),
    "yaml-config-plugin.jar": md5("yaml plugin"),
}


def plugin_status(plugins: Mapping[str, str]) -> str:
    """GoCD's ``pluginStatus`` string: ``"name=md5, name2=md5"``."""
    return ", ".join(f"{name}={checksum}" for name, checksum in plugins.items())


def dashboard_payload(
    *,
    primary_files: Mapping[str, str],
    standby_files: Mapping[str, str],
    primary_plugins: Mapping[str, str],
    standby_plugins: Mapping[str, str],
    last_sync: datetime | None,
    last_config_update: datetime | None,
    sync_errors: Sequence[str] = (),
    setup_status: str = "success",
    primary_error: str | None = None,
    primary_url: str = "http://ci-gocd-a.gocd.svc:8153",
) -> dict[str, Any]:
    """A ``dashboard.json`` body with GoCD's field names and shapes."""
    primary: dict[str, Any]
    if primary_error is not None:
        primary = {"url": primary_url, "error": primary_error}
    else:
        primary = {
            "url": primary_url,
            "latestDatabaseWalLocation": "Not Available, Reason, function does not exist",
            "configFilesUpdateInterval": 60000,
            "lastConfigUpdateTime": gson_date(last_config_update) if last_config_update else None,
            **{key: {"md5": value} for key, value in primary_files.items()},
            "pluginStatus": plugin_status(primary_plugins),
        }
    standby: dict[str, Any] = {
        "primaryStatusCheckInterval": 60000,
        "lastUpdateTime": gson_date(last_sync) if last_sync else None,
        "latestReceivedDatabaseWalLocation": "Not Available, Reason, function does not exist",
        **dict(standby_files),
        "pluginStatus": plugin_status(standby_plugins),
    }
    return {
        "userName": "bc_token",
        "setupStatus": setup_status,
        "syncErrors": list(sync_errors),
        "primaryServerDetails": primary,
        "standbyServerDetails": standby,
    }


def synced_dashboard(now: datetime) -> dict[str, Any]:
    """Everything equal on both sides; last sync 30 s before ``now``."""
    return dashboard_payload(
        primary_files=CONFIG_MD5S,
        standby_files=CONFIG_MD5S,
        primary_plugins=PLUGIN_MD5S,
        standby_plugins=PLUGIN_MD5S,
        last_sync=now - timedelta(seconds=30),
        last_config_update=now - timedelta(minutes=10),
    )


def out_of_sync_dashboard(now: datetime) -> dict[str, Any]:
    """cruise-config.xml changed on the primary and a plugin is missing on the standby."""
    primary_files = {**CONFIG_MD5S, "CRUISE_CONFIG_XML": md5("<cruise changed/>")}
    standby_plugins = {k: v for k, v in PLUGIN_MD5S.items() if k != "yaml-config-plugin.jar"}
    return dashboard_payload(
        primary_files=primary_files,
        standby_files=CONFIG_MD5S,
        primary_plugins=PLUGIN_MD5S,
        standby_plugins=standby_plugins,
        last_sync=now - timedelta(seconds=30),
        last_config_update=now - timedelta(seconds=10),
    )


def sync_errors_dashboard(now: datetime) -> dict[str, Any]:
    """The standby cannot reach the primary: GoCD's own error text, an old last sync."""
    return dashboard_payload(
        primary_files=CONFIG_MD5S,
        standby_files=CONFIG_MD5S,
        primary_plugins=PLUGIN_MD5S,
        standby_plugins=PLUGIN_MD5S,
        last_sync=now - timedelta(hours=2),
        last_config_update=now - timedelta(hours=3),
        sync_errors=[
            "Unable to connect to primary, please check that the business-continuity-token file "
            "is identical on primary and secondary, and that this server can connect to the "
            "primary server."
        ],
    )


def setup_incomplete_dashboard(now: datetime) -> dict[str, Any]:
    """A standby that has never completed its setup: no primary details, no sync yet."""
    return dashboard_payload(
        primary_files={},
        standby_files={},
        primary_plugins={},
        standby_plugins={},
        last_sync=None,
        last_config_update=None,
        setup_status="incomplete",
    )


@dataclass
class StandinGoCD:
    """The stand-in server. All attributes may be changed while it runs."""

    #: The server's business-continuity-token; ``None`` plays "token file missing" (-> 422).
    token: BCToken | None = field(default_factory=lambda: BCToken("bc_token", "badger"))
    #: The dashboard.json body; ``None`` plays "not in standby mode" (-> 500).
    dashboard: dict[str, Any] | None = None
    healthy: bool = True
    #: Paths requested, in order, so tests can assert what the client asked for.
    requests: list[str] = field(default_factory=list)
    _runner: web.AppRunner | None = field(default=None, init=False, repr=False)
    _port: int | None = field(default=None, init=False, repr=False)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, like ``bc.primary.url``: no ``/go`` suffix."""
        if self._port is None:
            raise RuntimeError("the stand-in GoCD server is not running")
        return f"http://127.0.0.1:{self._port}"

    async def _health(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        if not self.healthy:
            return web.json_response({"health": "UNAVAILABLE"}, status=503)
        return web.json_response({"health": "OK"})

    async def _dashboard(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        if self.token is None:
            return web.Response(
                status=422,
                text="business-continuity-token file is missing or invalid; see the docs",
            )
        if not self.token.matches_basic_auth(request.headers.get("Authorization")):
            return web.Response(
                status=401, headers={"WWW-Authenticate": f'Basic realm="{BC_REALM}"'}
            )
        if self.dashboard is None:
            return web.Response(
                status=500, text="This information only available for standby server"
            )
        return web.json_response(self.dashboard)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(GOCD_HEALTH_PATH, self._health)
        app.router.add_get(GOCD_BC_DASHBOARD_PATH, self._dashboard)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner, self._port = None, None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()
