"""Lowering a hot-standby-sensitive parameter (``max_connections`` & co., docs/architecture.md
§16) on real Postgres: a standby started with a value below the one its control file records
from the primary is refused by PostgreSQL ("recovery aborted because of insufficient parameter
settings") and, restarted again and again by its container, never streams. The entrypoint starts
it at the recorded value instead and says so (``gocdha.raised_settings``); once the primary has
restarted with the lower value and the standby has replayed that, a restart gives it the lower
value too."""

from __future__ import annotations

import pytest

from gocd_ha_operator.api.constants import CM_POSTGRESQL_CONF, PG_RAISED_SETTINGS_SETTING
from gocd_ha_operator.postgres import config as pgconfig
from tests.support.pg import (
    PgCluster,
    PgInstance,
    streaming,
    wait_until,
)

pytestmark = pytest.mark.postgres


def render(cluster: PgCluster, parameters: dict[str, str]) -> None:
    """What the operator does to the ConfigMap on a spec change."""
    path = cluster.config_dir / CM_POSTGRESQL_CONF
    path.write_text(pgconfig.render_postgresql_conf(parameters=parameters, synchronous=False))


def raised(instance: PgInstance) -> str:
    """The settings the entrypoint raised to what the control file requires ('' for none)."""
    value = instance.query(
        "SELECT coalesce(current_setting(%s, true), '')", PG_RAISED_SETTINGS_SETTING
    )
    return str(value)


def rows(instance: PgInstance) -> int:
    with instance.connect("gocd") as conn:
        row = conn.execute("SELECT count(*) FROM t").fetchone()
        return int(row[0]) if row else 0


def test_a_standby_below_the_primarys_value_starts_at_the_recorded_value(
    cluster: PgCluster,
) -> None:
    primary, standby = cluster.start_pair("a")
    assert standby.query("SHOW max_connections") == "100"
    render(cluster, {"max_connections": "80"})
    # The old order: the standby restarted first, below the primary's 100.
    standby.stop()
    standby.start("standby", timeout=60)
    wait_until(lambda: streaming(primary, "b"), timeout=60, what="the standby streaming again")
    assert standby.query("SHOW max_connections") == "100"
    assert raised(standby) == "max_connections"
    assert "max_connections = 80 is lower than" not in standby.log_text()
    # The primary restarts in place with 80 and writes the change into its WAL; the standby,
    # still at 100, replays it.
    with primary.connect("gocd") as conn:
        conn.execute("CREATE TABLE t (id int)")
        conn.execute("INSERT INTO t VALUES (1)")
    primary.stop()
    primary.start("primary", timeout=60)
    assert primary.query("SHOW max_connections") == "80"
    with primary.connect("gocd") as conn:
        conn.execute("INSERT INTO t VALUES (2)")
    wait_until(
        lambda: rows(standby) == 2,
        timeout=60,
        what="the standby replaying the primary's restart",
    )
    standby.stop()
    standby.start("standby", timeout=60)
    wait_until(lambda: streaming(primary, "b"), timeout=60, what="the standby streaming again")
    assert standby.query("SHOW max_connections") == "80"
    assert raised(standby) == ""
