"""Reconcile benchmark: N GoCDHAClusters on the in-process API emulator.

Prints, for each N (see :func:`measure` for the phases): seconds until every child of every
cluster exists; API requests per cluster to create them — all requests in that window (kopf's
patches, status, Events, the supervisors' first visits and the observation each reconcile's end
wakes) and those about children alone, with a breakdown by verb and kind; child writes per
cluster after an operator restart (resume); writes and GETs (by kind) per cluster per
observation interval of idle clusters; the resident memory of the process (operator +
emulator; the emulator keeps every object and request in memory, so this is an upper bound for
the operator alone). ``--memory N`` runs ``gocd-ha-operator run`` as its own process against
the emulator, as in production, and prints that process's memory with N clusters.

    .venv/bin/python benchmarks/reconcile.py            # N = 1, 50, 200
    .venv/bin/python benchmarks/reconcile.py -n 10
    .venv/bin/python benchmarks/reconcile.py -n 1 --memory 200   # the operator process alone

Postgres and GoCD are not running: every endpoint points at a closed loopback port, so the
observation is as cheap as it gets and its conditions stay constant.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import kopf

from gocd_ha_operator.controller import reconcile
from gocd_ha_operator.controller.handlers import OperatorConfig
from gocd_ha_operator.kube.apply import client_for
from gocd_ha_operator.kube.endpoints import Endpoint
from gocd_ha_operator.local.emulator import OperatorThread, emulator_settings, running_emulator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.clusters import MINIMAL_SPEC, Replace, cluster_body

NAMESPACE = "bench"
# 24 + the guards' ServiceAccount, Role, RoleBinding and the primary Lease (issue #12) + the CA and
# server certificate Secrets (issue #13) + the Cold sync agent's certificate Secret.
CHILDREN_PER_CLUSTER = 31
CLUSTER_KINDS = ("gocdhaclusters", "gocdhaclusters/status", "events")
WRITES = ("POST", "PATCH", "PUT", "DELETE")


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def kind_of(path: str) -> str:
    """The resource (plural) a request path is about, ``/status`` and watches included."""
    parts = path.strip("/").split("/")
    if "namespaces" in parts and len(parts) > parts.index("namespaces") + 2:
        at = parts.index("namespaces")
        return "/".join(parts[at + 2 : at + 3] + parts[at + 4 : at + 5])
    return parts[-1] if parts else path


def body(name: str) -> dict[str, Any]:
    return cluster_body(
        name=name, namespace=NAMESPACE, metadata={"uid": f"uid-{name}"}, spec=Replace(MINIMAL_SPEC)
    )


def closed_endpoints(names: list[str]) -> dict[str, Endpoint]:
    closed = Endpoint("127.0.0.1", 9)
    mapping = {}
    for name in names:
        for service, port in (
            ("pg-a", 5432),
            ("pg-b", 5432),
            ("gocd-a", 8153),
            ("gocd-b", 8153),
            ("gocd-a", 8155),
            ("gocd-b", 8155),
        ):
            mapping[f"{NAMESPACE}/{name}-{service}:{port}"] = closed
    return mapping


def breakdown(log: list[tuple[str, str]], n: int) -> str:
    """Requests per cluster by verb and kind, e.g. ``POST secrets=9.0``."""
    counts: dict[str, int] = {}
    for verb, path in log:
        key = f"{verb} {kind_of(path)}"
        counts[key] = counts.get(key, 0) + 1
    return " ".join(f"{key}={count / n:.1f}" for key, count in sorted(counts.items()))


def load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


async def measure(
    n: int, interval: float, latency_ms: float = 0.0, *, create_only: bool = False
) -> str:
    """Three phases, each its own operator process state (the same emulator):

    1. **create** — N clusters created at once, observation interval longer than the run: what
       creating every child costs, the supervisors' first visits and the observation each
       reconcile's end wakes included, but not the periodic observation of clusters already
       created while others still wait for a reconcile slot (that is phase 3's figure, per
       interval, and grows with how long the creation of N clusters takes);
    2. **resume** — the operator restarted with ``interval``: child writes per cluster (0 wanted);
    3. **idle** — every cluster idle for 5 intervals: writes and GETs per cluster per interval.
    """
    names = [f"c{i}" for i in range(n)]
    async with running_emulator() as (emulator, url):
        emulator.latency = latency_ms / 1000

        def config(observe_interval: float) -> OperatorConfig:
            return OperatorConfig(
                operator_image="bench/operator:0",
                observe_interval=observe_interval,
                kube_factory=lambda: client_for(url),
                endpoints=closed_endpoints(names),
                connection=kopf.ConnectionInfo(server=url),
                tune_settings=emulator_settings,
            )

        def children() -> int:
            return sum(
                1
                for (resource, _ns, _name), obj in emulator.objects.items()
                if resource.group != "gocdha.io" and resource.plural != "events" and not obj.deleted
            )

        def settled() -> int:
            """Clusters whose reconcile recorded its outcome and were observed after it."""
            done = 0
            for (resource, _ns, _name), obj in list(emulator.objects.items()):
                if resource.plural != "gocdhaclusters" or obj.deleted:
                    continue
                status = obj.raw.get("status") or {}
                ready: dict[str, Any] = next(
                    (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
                )
                if status.get("observedGeneration") and ready.get("reason") == "PrimaryUnavailable":
                    done += 1
            return done

        def writes(since: int = 0) -> list[tuple[str, str]]:
            return [(v, p) for v, p in emulator.request_log[since:] if v in WRITES]

        def busy() -> int:
            """Requests an idle observation does not make: every write, and every read but of
            the resource and its Lease (the resumed reconciles read every child)."""
            return sum(
                1
                for verb, path in emulator.request_log
                if verb in WRITES or kind_of(path) not in ("gocdhaclusters", "leases")
            )

        async def quiesce() -> None:
            """Until only idle observations happened for two observation intervals."""
            last, quiet_since = busy(), time.monotonic()
            while time.monotonic() - quiet_since < 2 * interval:
                await asyncio.sleep(interval / 4)
                if busy() != last:
                    last, quiet_since = busy(), time.monotonic()

        # 1. create
        operator = OperatorThread(config(observe_interval=3600.0))
        await operator.start()
        begin = len(emulator.request_log)
        started = time.monotonic()
        async with aiohttp.ClientSession() as session:
            for name in names:
                path = f"/apis/gocdha.io/v1alpha1/namespaces/{NAMESPACE}/gocdhaclusters"
                async with session.post(url + path, json=body(name)) as response:
                    response.raise_for_status()
        while children() < CHILDREN_PER_CLUSTER * n:
            await asyncio.sleep(0.25)  # the emulator shares this event loop: poll gently
        create_s = time.monotonic() - started
        while settled() < n:
            await asyncio.sleep(0.25)
        await asyncio.sleep(1.0)  # Events are posted from kopf's queue
        created_log = [
            (verb, path)
            for verb, path in emulator.request_log[begin:]
            if not (verb == "POST" and path.endswith("/gocdhaclusters"))  # ours, not the operator's
        ]
        child_log = [
            (verb, path)
            for verb, path in created_log
            if "/namespaces/" in path and kind_of(path) not in CLUSTER_KINDS
        ]
        memory = rss_mib()
        await operator.stop()
        if create_only:
            return (
                f"reconcile: n={n} load={load_average()} latency_ms={latency_ms:g} "
                f"apply_concurrency={reconcile.APPLY_CONCURRENCY} create_s={create_s:.2f} "
                f"create_requests_per_cluster={len(created_log) / n:.1f} "
                f"child_requests_per_cluster={len(child_log) / n:.1f} "
                f"(per cluster: {breakdown(created_log, n)}) rss_mib={memory:.0f}"
            )

        # 2. resume (an operator restart: every cluster reconciled again, nothing written)
        before_resume = len(emulator.request_log)
        restarted = OperatorThread(config(observe_interval=interval))
        await restarted.start()

        def resumed() -> int:
            """Reconciles since the restart: only a reconcile reads a PodDisruptionBudget."""
            return sum(
                1
                for verb, path in emulator.request_log[before_resume:]
                if verb == "GET" and kind_of(path) == "poddisruptionbudgets"
            )

        while resumed() < n:
            await asyncio.sleep(0.25)
        await quiesce()
        resume_log = emulator.request_log[before_resume:]
        resume_child_writes = [
            w for w in resume_log if w[0] in WRITES and kind_of(w[1]) not in CLUSTER_KINDS
        ]

        # 3. idle
        ticks = 5
        before_idle = len(emulator.request_log)
        await asyncio.sleep(ticks * interval)
        idle_log = emulator.request_log[before_idle:]
        idle_writes = [w for w in idle_log if w[0] in WRITES]
        idle_gets: dict[str, int] = {}
        for verb, path in idle_log:
            if verb == "GET":
                idle_gets[kind_of(path)] = idle_gets.get(kind_of(path), 0) + 1
        await restarted.stop()
    idle_reads = " ".join(
        f"{kind}={count / (n * ticks):.2f}" for kind, count in sorted(idle_gets.items())
    )
    return (
        f"reconcile: n={n} load={load_average()} latency_ms={latency_ms:g} "
        f"apply_concurrency={reconcile.APPLY_CONCURRENCY} create_s={create_s:.2f} "
        f"create_requests_per_cluster={len(created_log) / n:.1f} "
        f"child_requests_per_cluster={len(child_log) / n:.1f} "
        f"(per cluster: {breakdown(created_log, n)}) "
        f"resume_child_writes_per_cluster={len(resume_child_writes) / n:.2f} "
        f"resume_requests_per_cluster={len(resume_log) / n:.1f} "
        f"(per cluster: {breakdown(resume_log, n)}) "
        f"idle_writes_per_cluster_per_interval={len(idle_writes) / (n * ticks):.3f} "
        f"{'(' + breakdown(idle_writes, n * ticks) + ') ' if idle_writes else ''}"
        f"idle_gets_per_cluster_per_interval: {idle_reads} "
        f"rss_mib={memory:.0f}"
    )


def process_rss_mib(pid: int) -> tuple[float, float]:
    """Resident and peak resident memory of process ``pid`` (MiB)."""
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", float("nan")), values.get("VmHWM", float("nan"))


async def measure_process(n: int, interval: float, workdir: Path) -> str:
    """``gocd-ha-operator run`` as its own process (as in production) against the emulator: its
    memory alone once N clusters have every child and a few idle observations passed."""
    names = [f"c{i}" for i in range(n)]
    async with running_emulator() as (emulator, url):
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "emulator", "cluster": {"server": url}}],
                    "users": [{"name": "bench", "user": {"token": "not-checked"}}],
                    "contexts": [
                        {"name": "emulator", "context": {"cluster": "emulator", "user": "bench"}}
                    ],
                    "current-context": "emulator",
                }
            )
        )
        closed = {key: str(value) for key, value in closed_endpoints(names).items()}
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "GOCDHA_OPERATOR_IMAGE": "bench/operator:0",
            "GOCDHA_ENDPOINTS": json.dumps(closed),
        }
        command = [
            sys.executable,
            "-m",
            "gocd_ha_operator.cli.main",
            "run",
            "--all-namespaces",
            "--no-leader-election",
            # No metrics server: the default port is shared by everything on the machine.
            "--metrics-bind-address",
            "0",
            "--observe-interval",
            str(max(1, round(interval))),
        ]
        log = (workdir / "operator.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
        )
        try:
            async with aiohttp.ClientSession() as session:
                for name in names:
                    path = f"/apis/gocdha.io/v1alpha1/namespaces/{NAMESPACE}/gocdhaclusters"
                    async with session.post(url + path, json=body(name)) as response:
                        response.raise_for_status()

            def children() -> int:
                return sum(
                    1
                    for (resource, _ns, _name), obj in emulator.objects.items()
                    if resource.group != "gocdha.io"
                    and resource.plural != "events"
                    and not obj.deleted
                )

            started = time.monotonic()
            while children() < CHILDREN_PER_CLUSTER * n and time.monotonic() - started < 1800:
                await asyncio.sleep(0.5)
            await asyncio.sleep(5 * interval)  # a few idle observations of every cluster
            rss, peak = process_rss_mib(process.pid)
        finally:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout=30)
            except TimeoutError:
                process.kill()
                await process.wait()
            log.close()
    return (
        f"memory: n={n} operator_process_rss_mib={rss:.0f} operator_process_peak_mib={peak:.0f} "
        f"children={children()}/{CHILDREN_PER_CLUSTER * n}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, action="append", help="number of clusters (repeatable)")
    parser.add_argument("--interval", type=float, default=1.0, help="observation interval (s)")
    parser.add_argument(
        "--memory",
        type=int,
        action="append",
        help="also measure the operator process alone with this many clusters (repeatable)",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="delay every API request by this much, like an API server across a network",
    )
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="a reconcile sends one request at a time (what applying children at once buys)",
    )
    parser.add_argument("--create-only", action="store_true", help="stop after the creation phase")
    args = parser.parse_args()
    if args.sequential:
        # A benchmark-only override of the constant the reconcile reads at each call.
        reconcile.APPLY_CONCURRENCY = 1  # type: ignore[misc]
    for n in args.n or [1, 50, 200]:
        print(
            await measure(n, args.interval, args.latency_ms, create_only=args.create_only),
            flush=True,
        )
    for n in args.memory or []:
        with tempfile.TemporaryDirectory(prefix="gocdha-bench-") as workdir:
            print(await measure_process(n, args.interval, Path(workdir)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
