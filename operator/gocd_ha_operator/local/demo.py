"""``gocd-ha-operator demo``: the operator's main job on a machine without a cluster.

The real operator (the same handlers as ``run``) runs against an in-process Kubernetes API; its
"pods" are real local Postgres instances started from the rendered pod templates by the project's
own entrypoint, and GoCD servers are stand-ins that serve the health endpoint and write a minimal
configuration (a GoCD server cannot run here), with the real Cold-mode ``restore`` init container
and ``sync-agent`` sidecar beside them. The demo applies a resource, shows replication and the
primary Lease its instance guard renews, writes build rows over verified TLS, promotes the standby
through the annotation exactly as ``kubectl annotate`` would, and prints a timeline with the RPO
and the time until the new primary took writes. Everything it started is stopped and removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import pwd
import re
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final

import aiohttp

from gocd_ha_operator.api.constants import (
    ANNOTATION_LEASE_TIMELINE,
    ANNOTATION_PROMOTE,
    SYNC_AGENT_PORT,
)
from gocd_ha_operator.rules.lease import holder_identity

EXIT_UNAVAILABLE: Final = 2
NAME: Final = "ci"
NAMESPACE: Final = "demo"
#: Loopback only, any free port: the demo must not fail because 8081 is taken.
METRICS_ADDRESS: Final = ("127.0.0.1", 0)
RESOURCE: Final[dict[str, Any]] = {
    "apiVersion": "gocdha.io/v1alpha1",
    "kind": "GoCDHACluster",
    "metadata": {"name": NAME, "namespace": NAMESPACE},
    "spec": {
        "gocd": {"image": "gocd/gocd-server:v26.1.0"},
        "postgres": {"image": "postgres:15"},
        "sharedStorage": {"size": "1Gi", "storageClassName": "local"},
    },
}


#: The series the demo shows after its promotion (what Prometheus would have scraped).
DEMO_METRICS: Final = (
    "^gocdha_(side_role|promotions_total|promotion_request_to_writable_seconds_(sum|count)|"
    "replication_lag_bytes)"
)


async def scraped(url: str) -> list[str]:
    """The demo's own /metrics, filtered to what tells the story of the promotion."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    pattern = re.compile(DEMO_METRICS)
    return [
        line
        for line in text.splitlines()
        if pattern.match(line)
        and not (line.startswith("gocdha_promotions_total") and line.endswith(" 0.0"))
    ]


class Timeline:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.start:6.2f}s] {message}", flush=True)


LEASE_PATH: Final = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{NAME}-primary"


def lease_line(lease: dict[str, Any]) -> str:
    """What ``kubectl get lease ci-primary -o yaml`` shows of the primary Lease."""
    spec = lease.get("spec") or {}
    timeline = (lease.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_LEASE_TIMELINE)
    on_timeline = f" on timeline {timeline}" if timeline else ""
    return (
        f"held by {spec.get('holderIdentity')}{on_timeline}, renewed at "
        f"{spec.get('renewTime')}, duration {spec.get('leaseDurationSeconds')} s"
    )


async def renewed_lease(stack: Any, timeout: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The primary Lease before and after its holder's guard renewed it once."""
    first = await stack.request("GET", LEASE_PATH)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        now = await stack.request("GET", LEASE_PATH)
        if (now.get("spec") or {}).get("renewTime") != (first.get("spec") or {}).get("renewTime"):
            return first, now
    raise TimeoutError(f"the primary Lease was not renewed within {timeout:g} s")


#: How long the demo waits, after the rejoin, for the new primary's guard to renew the Lease with
#: its new timeline: a few of its renewals (every ``retryPeriodSeconds``, 2 s by default).
NEW_HOLDER_WAIT_SECONDS: Final = 10.0


def lease_timeline(lease: dict[str, Any]) -> int | None:
    """The holder's timeline as its guard last wrote it in the Lease (None: absent, unreadable)."""
    value = (lease.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_LEASE_TIMELINE)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def renewed_on_new_timeline(lease: dict[str, Any], holder: str, after: int | None) -> bool:
    """``holder`` holds the Lease and it carries a timeline later than ``after`` (the old
    primary's). Only the holder's guard writes the timeline, and only while its Postgres is a
    primary; the operator's hand-over leaves the old primary's in place. So this is a renewal by
    the new primary's guard, not the hand-over: reading the Lease any earlier shows the new
    holder with the old timeline, which is not what the Lease says once the guard has renewed."""
    timeline = lease_timeline(lease)
    held = (lease.get("spec") or {}).get("holderIdentity") == holder
    return held and timeline is not None and (after is None or timeline > after)


async def lease_of_new_primary(
    stack: Any, holder: str, after: int | None, timeout: float, poll: float = 0.2
) -> tuple[dict[str, Any], bool]:
    """The primary Lease once ``holder``'s guard renewed it on a timeline after ``after``, and
    True; after ``timeout`` seconds, the Lease as last read and False (the caller says so)."""
    deadline = time.monotonic() + timeout
    while True:
        lease: dict[str, Any] = await stack.request("GET", LEASE_PATH)
        if renewed_on_new_timeline(lease, holder, after):
            return lease, True
        if time.monotonic() >= deadline:
            return lease, False
        await asyncio.sleep(poll)


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def config_synced_from(agent: str, status: dict[str, Any]) -> bool:
    """ConfigSynced is True, as reported by the sync agent at ``agent`` (its local address)."""
    source = (status.get("configSync") or {}).get("source")
    return condition(status, "ConfigSynced").get("status") == "True" and source == (
        f"https://{agent}/status"
    )


def get_gocdha(status: dict[str, Any]) -> str:
    """What ``kubectl get gocdha`` shows (the CRD's printer columns)."""
    lag = status.get("replication", {}).get("lagBytes")
    rows = [
        ("NAME", "PRIMARY", "READY", "LAG", "SYNCED"),
        (
            NAME,
            status.get("primary", ""),
            condition(status, "Ready").get("status", ""),
            "" if lag is None else str(lag),
            condition(status, "ConfigSynced").get("status", ""),
        ),
    ]
    return "\n".join("   ".join(f"{cell:<8}" for cell in row).rstrip() for row in rows)


async def demo(timeline: Timeline) -> int:
    import psycopg  # noqa: PLC0415 - only the demo needs a database client of its own

    from gocd_ha_operator.local.stack import local_stack  # noqa: PLC0415
    from gocd_ha_operator.local.workload import streaming_from  # noqa: PLC0415

    async with local_stack(
        [NAME], namespace=NAMESPACE, observe_interval=0.5, metrics_address=METRICS_ADDRESS
    ) as stack:
        timeline.say("operator started against an in-process Kubernetes API")
        timeline.say(
            f"operator metrics (Prometheus): {stack.metrics_url} (e.g. curl -s URL | grep ^gocdha_)"
        )
        await stack.apply(RESOURCE)
        timeline.say(f"kubectl apply: GoCDHACluster {NAMESPACE}/{NAME} (Cold standby, GoCD 26.1)")
        status = await stack.wait_for(
            lambda s: streaming_from("a", s) and s, NAME, timeout=180, what="replication"
        )
        replication = status["replication"]
        timeline.say(
            f"side a is primary, side b streams from it (lag {replication.get('lagBytes')} "
            f"bytes, slot {replication.get('slotWalStatus')}, last archived WAL "
            f"{replication.get('lastArchivedWal')})"
        )
        before, after = await renewed_lease(stack, timeout=60)
        timeline.say(f"Lease {NAME}-primary {lease_line(before)}")
        timeline.say(
            f"  renewed again by side a's instance guard at {after['spec'].get('renewTime')}: "
            "a primary whose guard cannot renew stops itself before the Lease expires"
        )
        info = await stack.gocd_conninfo(NAME, f"{NAME}-pg-primary")
        assert info is not None
        async with await psycopg.AsyncConnection.connect(**info, autocommit=True) as conn:
            cursor = await conn.execute(
                "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl"
            )
            tls = await cursor.fetchone()
            await conn.execute("CREATE TABLE builds (id serial PRIMARY KEY, pipeline text)")
            for number in range(1, 1001):
                await conn.execute("INSERT INTO builds (pipeline) VALUES (%s)", (f"p{number}",))
        timeline.say(
            "wrote 1000 committed build rows through the Service ci-pg-primary over "
            f"{tls[0] if tls else 'NO TLS'} (sslmode=verify-full against the cluster CA)"
        )
        token = str(int(time.time()))
        annotated = time.monotonic()
        await stack.annotate(NAME, ANNOTATION_PROMOTE, token)
        timeline.say(f"kubectl annotate gocdha {NAME} {ANNOTATION_PROMOTE}={token} --overwrite")
        seen: set[str] = set()

        def progress(status: dict[str, Any]) -> dict[str, Any] | None:
            promotion = status.get("promotion", {})
            step = promotion.get("step")
            if promotion.get("token") == token and step and step not in seen:
                seen.add(step)
                timeline.say(f"  promotion step: {step}")
            done = promotion.get("token") == token and promotion.get("result") != "InProgress"
            return promotion if done else None

        promotion = await stack.wait_for(progress, NAME, timeout=180, what="the promotion")
        if promotion.get("result") != "Succeeded":
            timeline.say(f"promotion {promotion.get('result')}: {promotion.get('message')}")
            return 1
        writable = None
        while writable is None and time.monotonic() - annotated < 60:
            info = await stack.gocd_conninfo(NAME, f"{NAME}-pg-primary")
            with contextlib.suppress(psycopg.Error):
                if info is not None:
                    async with await psycopg.AsyncConnection.connect(**info) as conn:
                        await conn.execute("INSERT INTO builds (pipeline) VALUES ('after')")
                        await conn.commit()
                        cursor = await conn.execute("SELECT count(*) FROM builds")
                        row = await cursor.fetchone()
                        writable = time.monotonic() - annotated, (row[0] if row else 0) - 1
            await asyncio.sleep(0.05)
        if writable is None:
            timeline.say("the new primary did not accept writes within 60 s")
            return 1
        seconds, kept = writable
        timeline.say(
            f"{promotion['type']} done: side {promotion['toSide']} is primary, writable "
            f"{seconds:.2f}s after the annotation (pg_promote took "
            f"{promotion.get('promoteSeconds')}s); {kept} of 1000 rows there, "
            f"RPO {1000 - kept} rows / {promotion.get('rpoBytes')} bytes"
        )
        status = await stack.wait_for(
            lambda s: streaming_from("b", s) and s, NAME, timeout=180, what="the rejoin"
        )
        timeline.say("side a rejoined as a standby of side b (pg_rewind) and streams")
        old_timeline = promotion.get("fromTimeline") or lease_timeline(before)
        holder = holder_identity(NAME, promotion["toSide"])
        lease, renewed = await lease_of_new_primary(
            stack, holder, old_timeline, timeout=NEW_HOLDER_WAIT_SECONDS
        )
        if renewed:
            timeline.say(f"Lease {NAME}-primary {lease_line(lease)}")
        else:
            timeline.say(
                f"Lease {NAME}-primary not yet renewed by {holder} on a timeline after "
                f"{old_timeline} within {NEW_HOLDER_WAIT_SECONDS:g} s; as last read: "
                f"{lease_line(lease)}"
            )
        with contextlib.suppress(TimeoutError):
            # The new primary's sync agent reports at its first cycle, right after it starts (so
            # after the restore init container, which ran before any container of the pod).
            agent = stack.kubelet.endpoints().get(f"{NAMESPACE}/{NAME}-gocd-b:{SYNC_AGENT_PORT}")
            status = await stack.wait_for(
                lambda s: config_synced_from(str(agent), s) and s,
                NAME,
                timeout=20,
                what="config sync",
            )
        sync = status.get("configSync") or {}
        restored = "files from the mirror synced at" in stack.kubelet.pod_log(f"{NAME}-gocd-b")
        timeline.say(
            f"GoCD (a stand-in): side b's server {'restored' if restored else 'did not restore'} "
            f"side a's mirrored config in its restore init container; its sync-agent sidecar "
            f"mirrors {len(sync.get('files') or [])} files, ConfigSynced "
            f"{condition(status, 'ConfigSynced').get('status')} "
            f"({condition(status, 'ConfigSynced').get('reason')})"
        )
        if stack.metrics_url is not None:
            print()
            print(f"$ curl -s {stack.metrics_url} | grep -E '{DEMO_METRICS}'")
            for line in await scraped(stack.metrics_url):
                print(line)
        print()
        print("$ kubectl get gocdha -n demo")
        print(get_gocdha(status))
        print()
    timeline.say("stopped every process and removed the local cluster")
    return 0 if kept == 1000 else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="show the operator's logs")


def prerequisites_problem(command: str) -> str | None:
    """One line saying what to install when ``command`` (demo, drill) cannot run here."""
    from gocd_ha_operator.local.process import default_os_user, find_pg_bindir  # noqa: PLC0415

    bindir = find_pg_bindir()
    if bindir is None or not (bindir / "postgres").exists():
        return (
            f"{command}: PostgreSQL server binaries were not found (looked in "
            "/usr/lib/postgresql/*/bin and GOCDHA_PG_BINDIR); install them, e.g. "
            "`apt-get install postgresql-15`"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(default_os_user())
        except KeyError:
            return (
                f"{command}: running as root, and PostgreSQL refuses root: create the "
                f"unprivileged user it runs as, e.g. `useradd --system --create-home "
                f"{default_os_user()}`"
            )
    return None


def run_on_this_machine(
    command: str, verbose: bool, main: Callable[[Timeline], Coroutine[Any, Any, int]]
) -> int:
    """What ``demo`` and ``drill`` share: the prerequisites check, quiet logs unless asked, a
    timeline, and Ctrl-C as exit 130."""
    problem = prerequisites_problem(command)
    if problem is not None:
        print(problem, file=sys.stderr)
        return EXIT_UNAVAILABLE
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR)
    if not verbose:
        logging.getLogger("kopf").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(main(Timeline()))
    except KeyboardInterrupt:
        return 130


def run(args: argparse.Namespace) -> int:
    return run_on_this_machine("demo", args.verbose, demo)
