"""``kubectl gocdha`` against the API emulator: output, exit statuses, and bad input."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp.web
import pytest
import yaml

from gocd_ha_operator.api.constants import ANNOTATION_PROMOTE, ANNOTATION_PROMOTE_FORCE
from tests.support.clusters import MINIMAL_SPEC, Replace, cluster_body
from tests.support.plugin import NAMESPACE, Emulated, Plugin, write_kubeconfig
from tests.support.ports import free_port

pytestmark = [pytest.mark.emulator]


def stamp(seconds_ago: float = 0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message or reason,
        "lastTransitionTime": stamp(600),
    }


def cluster(name: str = "ci", *, degraded: bool = False, **status: Any) -> dict[str, Any]:
    body = cluster_body(
        name=name,
        namespace=NAMESPACE,
        metadata={"annotations": {}},
        spec=Replace({**MINIMAL_SPEC, "failover": {"maxLagBytes": 1000}}),
    )
    body["status"] = {
        "primary": "a",
        "standby": "b",
        "standbyMode": "Cold",
        "gocdVersion": "26.1.0",
        "sides": {
            "a": {
                "role": "primary",
                "postgres": {"reachable": True, "inRecovery": False, "timeline": 1},
                "gocd": {"replicas": 1, "healthy": True, "mode": "primary"},
            },
            "b": {
                "role": "standby",
                "postgres": {"reachable": True, "inRecovery": True, "timeline": 1},
                "gocd": {"replicas": 0, "mode": "stopped"},
            },
        },
        "replication": {
            "state": "Streaming",
            "lagBytes": 0,
            "lastStreamingTime": stamp(10),
            "archiveFailures": 0,
        },
        "conditions": [
            condition("Ready", "True", "Protected"),
            condition("FailoverPossible", "True", "StandbyReady", "side b can be promoted"),
            condition("Degraded", "False", "Protected"),
        ],
    }
    if degraded:
        body["status"]["sides"]["b"]["postgres"] = {
            "reachable": False,
            "message": "connection refused",
        }
        body["status"]["replication"].update(
            {"state": "Disconnected", "lagBytes": None, "lastStreamingTime": stamp(900)}
        )
        body["status"]["conditions"] = [
            condition("Ready", "False", "StandbyNotReplicating", "side b: connection refused"),
            condition("StandbyReplicating", "False", "StandbyUnreachable", "connection refused"),
            condition(
                "FailoverPossible", "False", "StandbyUnreachable", "side b cannot be reached"
            ),
            condition("Degraded", "True", "StandbyNotReplicating", "side b: connection refused"),
        ]
    body["status"].update(status)
    return body


async def test_status_of_a_healthy_pair(emulated: Emulated) -> None:
    emulated.put(cluster())
    result = await emulated.plugin("status", "ci")
    assert result.code == 0, result.err
    assert "GoCDHACluster build/ci   Ready=True (Protected)" in result.out
    assert re.search(r"role\s+primary\s+standby", result.out)
    assert re.search(r"postgres\s+up, writable\s+up, in recovery", result.out)
    assert "failover        possible (StandbyReady)" in result.out
    assert "all conditions fine" in result.out


async def test_status_of_a_degraded_pair_says_what_is_wrong(emulated: Emulated) -> None:
    emulated.put(cluster(degraded=True))
    result = await emulated.plugin("status", "ci")
    assert result.code == 0
    assert "NOT possible (StandbyUnreachable)" in result.out
    assert "not fine:" in result.out
    assert "StandbyReplicating=False (StandbyUnreachable): connection refused" in result.out
    assert "Degraded=True" in result.out and "all conditions fine" not in result.out


async def test_status_machine_readable_and_all_clusters(emulated: Emulated) -> None:
    emulated.put(cluster("ci"))
    emulated.put(cluster("cd", degraded=True))
    as_json = await emulated.plugin("status", "cd", "-o", "json")
    document = json.loads(as_json.out)
    assert document["name"] == "cd"
    assert [c["type"] for c in document["notFine"]] == [
        "Ready",
        "StandbyReplicating",
        "FailoverPossible",
        "Degraded",
    ]
    assert any("cannot be reached" in r for r in document["failoverObstacles"])
    as_yaml = await emulated.plugin("status", "-o", "yaml")
    assert [d["name"] for d in yaml.safe_load(as_yaml.out)] == ["cd", "ci"]
    every = await emulated.plugin("status")
    assert "build/cd" in every.out and "build/ci" in every.out


async def test_why_not(emulated: Emulated) -> None:
    emulated.put(cluster("ci"))
    emulated.put(cluster("cd", degraded=True))
    healthy = await emulated.plugin("why-not", "ci")
    # A healthy pair under the default Manual mode: only the annotation can promote.
    assert healthy.code == 0
    assert "automatic failover is off" in healthy.out
    assert "cannot be reached" not in healthy.out
    broken = await emulated.plugin("why-not", "cd")
    assert "the standby (side b) cannot be reached: connection refused" in broken.out
    assert "last streamed" in broken.out


async def test_history(emulated: Emulated) -> None:
    entry = {
        "token": "t1",
        "type": "Switchover",
        "trigger": "Annotation",
        "fromSide": "a",
        "toSide": "b",
        "startedAt": stamp(100),
        "finishedAt": stamp(95),
        "result": "Succeeded",
        "rpoBytes": 0,
        "message": "side b is primary",
    }
    emulated.put(cluster(history=[entry]))
    emulated.put(cluster("cd"))
    result = await emulated.plugin("history", "ci")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].split()[:5] == ["STARTED", "TYPE", "FROM", "TO", "RESULT"]
    assert "Switchover" in lines[1] and "Succeeded" in lines[1] and "t1" in lines[1]
    assert "no promotion yet" in (await emulated.plugin("history", "cd")).out


async def test_promote_writes_a_fresh_token_and_does_not_wait_off_a_terminal(
    emulated: Emulated,
) -> None:
    emulated.put(cluster())
    first = await emulated.plugin("promote", "ci", "--no-wait")
    assert first.code == 0, first.err
    token = emulated.stored("ci")["metadata"]["annotations"][ANNOTATION_PROMOTE]
    assert token.startswith("kubectl-") and token in first.out
    # The operator handled it (what it writes), so a second request is allowed: a new token.
    status = emulated.stored("ci")["status"]
    status["handledTokens"] = {"promote": token}
    second = await emulated.plugin("promote", "ci", "--force", "--no-wait")
    assert second.code == 0
    annotations = emulated.stored("ci")["metadata"]["annotations"]
    assert annotations[ANNOTATION_PROMOTE_FORCE] not in (token, "")


async def test_promote_refuses_while_one_runs_or_waits(emulated: Emulated) -> None:
    running = {"token": "t9", "result": "InProgress", "step": "CatchingUp"}
    emulated.put(cluster(promotion=running))
    result = await emulated.plugin("promote", "ci", "--no-wait")
    assert result.code == 2
    assert result.err.strip() == (
        "error: a promotion of ci is already running (token 't9', step CatchingUp); "
        "follow it with `kubectl gocdha status ci`"
    )
    waiting = cluster("cd")
    waiting["metadata"]["annotations"][ANNOTATION_PROMOTE] = "not-yet-seen"
    emulated.put(waiting)
    result = await emulated.plugin("promote", "cd", "--no-wait")
    assert result.code == 2 and "already waiting" in result.err
    assert len(result.err.strip().splitlines()) == 1


async def play_operator(emulated: Emulated, answer: Any) -> None:
    """Like the operator: wait for the annotation, then write ``answer(token)`` (a list of status
    patches, each its own write) through the status subresource."""
    path = f"{emulated.url}/apis/gocdha.io/v1alpha1/namespaces/{NAMESPACE}/gocdhaclusters/ci"
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(path) as response:
                stored = await response.json()
            token = stored["metadata"].get("annotations", {}).get(ANNOTATION_PROMOTE)
            if token:
                for patch in answer(token):
                    async with session.patch(
                        path + "/status",
                        json={"status": patch},
                        headers={"Content-Type": "application/merge-patch+json"},
                    ) as response:
                        assert response.status == 200
                return
            await asyncio.sleep(0.05)


async def test_promote_wait_reports_a_refusal(emulated: Emulated) -> None:
    emulated.put(cluster(degraded=True))

    def refuse(token: str) -> list[dict[str, Any]]:
        refusal = {"token": token, "result": "Refused", "message": "the standby cannot be reached"}
        return [{"history": [refusal]}]

    operator = asyncio.create_task(play_operator(emulated, refuse))
    result = await emulated.plugin("promote", "ci", "--wait", "--timeout", "20")
    await operator
    assert result.code == 1
    assert "refused: the standby cannot be reached" in result.out


async def test_promote_wait_shows_every_step_and_a_failure_exits_1(emulated: Emulated) -> None:
    """Steps written in quick succession all appear (the plugin watches, it does not poll)."""
    emulated.put(cluster())

    def fail(token: str) -> list[dict[str, Any]]:
        base = {"token": token, "type": "Switchover", "fromSide": "a", "toSide": "b"}
        steps = ["Fencing", "CatchingUp", "StoppingOldPrimary", "Promoting"]
        patches = [{"promotion": {**base, "step": s, "result": "InProgress"}} for s in steps]
        failed = {**base, "step": "Promoting", "result": "Failed", "message": "pg_promote failed"}
        return [*patches, {"promotion": failed, "history": [failed]}]

    operator = asyncio.create_task(play_operator(emulated, fail))
    result = await emulated.plugin("promote", "ci", "--wait", "--timeout", "20")
    await operator
    assert result.code == 1
    shown = [line.split("] ", 1)[1] for line in result.out.splitlines() if "] step " in line]
    assert shown == [
        "step Fencing",
        "step CatchingUp",
        "step StoppingOldPrimary",
        "step Promoting",
    ]
    assert "Switchover a->b Failed" in result.out and "pg_promote failed" in result.out


async def test_promote_wait_times_out_with_exit_1(emulated: Emulated) -> None:
    emulated.put(cluster())
    result = await emulated.plugin("promote", "ci", "--wait", "--timeout", "1")
    assert result.code == 1
    assert "timed out after 1s: the promotion is not started by the operator" in result.out


async def test_logs_through_the_api(emulated: Emulated) -> None:
    emulated.put(cluster())
    for side in ("a", "b"):
        emulated.put(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"ci-pg-{side}-0",
                    "namespace": NAMESPACE,
                    "labels": {
                        "app.kubernetes.io/name": "gocd",
                        "app.kubernetes.io/instance": "ci",
                        "gocdha.io/side": side,
                    },
                },
                "spec": {"containers": [{"name": "postgres"}]},
            }
        )
    emulated.emulator[re.compile(r".*/pods/ci-pg-b-0/log")] << b"LOG:  started streaming\n"
    result = await emulated.plugin("logs", "ci", "--side", "b")
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "==> pod/ci-pg-b-0 container/postgres <==",
        "LOG:  started streaming",
    ]
    none = await emulated.plugin("logs", "ci", "--side", "a", "-n", "elsewhere")
    assert none.code == 2 and "not found in namespace elsewhere" in none.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["status", "nope"], "error: GoCDHACluster 'nope' not found in namespace build"),
        (["promote", "nope"], "error: GoCDHACluster 'nope' not found in namespace build"),
        (
            ["why-not", "ci", "-n", "other"],
            "error: GoCDHACluster 'ci' not found in namespace other",
        ),
        (["--context", "missing", "status"], "error: context 'missing' is not in the kubeconfig"),
        (["promote"], "error: kubectl gocdha promote: the following arguments are required: name"),
        (["logs", "ci", "--side", "c"], "error: kubectl gocdha logs: argument --side: invalid "),
        (["promote", "ci", "--timeout", "0"], "error: --timeout must be positive"),
        (["frobnicate"], "error: kubectl gocdha: argument COMMAND: invalid choice: 'frobnicate'"),
    ],
)
async def test_bad_input_is_one_line_and_exit_2(
    emulated: Emulated, argv: list[str], message: str
) -> None:
    emulated.put(cluster())
    result = await emulated.plugin(*argv)
    assert result.code == 2
    assert result.err.startswith(message), result.err
    assert len(result.err.strip().splitlines()) == 1
    assert "Traceback" not in result.err


async def test_the_context_namespace_is_used(emulated: Emulated, tmp_path: Path) -> None:
    emulated.put(cluster())
    other = await emulated.plugin("--context", "other", "status", "ci")
    assert other.code == 2 and "namespace x" in other.err
    explicit = await emulated.plugin("--context", "other", "-n", NAMESPACE, "status", "ci")
    assert explicit.code == 0


async def test_no_permission(tmp_path: Path) -> None:
    async def forbidden(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response(
            {
                "kind": "Status",
                "status": "Failure",
                "reason": "Forbidden",
                "message": 'gocdhaclusters.gocdha.io "ci" is forbidden: User "me" cannot get',
                "code": 403,
            },
            status=403,
        )

    app = aiohttp.web.Application()
    app.router.add_route("*", "/{tail:.*}", forbidden)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        plugin = Plugin(write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{port}"))
        result = await plugin("status", "ci")
    finally:
        await runner.cleanup()
    assert result.code == 2
    assert result.err.startswith(
        "error: no permission to get gocdhaclusters/ci in namespace build: "
    ), result.err
    assert len(result.err.strip().splitlines()) == 1


async def test_unreachable_api_server(tmp_path: Path) -> None:
    port = free_port()  # claimed: no other worker is handed it and starts a server there
    plugin = Plugin(write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{port}"))
    result = await plugin("status")
    assert result.code == 2
    assert result.err.startswith(
        f"error: cannot reach the Kubernetes API at http://127.0.0.1:{port}"
    )
    assert len(result.err.strip().splitlines()) == 1


async def test_bad_kubeconfig(tmp_path: Path) -> None:
    path = tmp_path / "kc"
    path.write_text("this: [is not a kubeconfig")
    result = await Plugin(path)("status")
    assert result.code == 2
    assert result.err.startswith("error: cannot load the kubeconfig")
    assert len(result.err.strip().splitlines()) == 1
