"""``kubectl gocdha``: look at and promote GoCDHAClusters from a terminal.

kubectl runs any ``kubectl-<name>`` on the PATH as ``kubectl <name>``, passing the remaining
arguments; this console script is that executable. Like kubectl it takes ``--kubeconfig``,
``--context`` and ``-n/--namespace`` (before or after the subcommand).

Exit statuses: 0 success; 1 the thing asked for did not succeed (a promotion Failed or was
Refused, or did not finish within ``--timeout``); 2 bad input (no such cluster, no permission, a
promotion already running, an unreachable API). Every failure is one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import yaml

from gocd_ha_operator.api.constants import ANNOTATION_PROMOTE, ANNOTATION_PROMOTE_FORCE, SIDES
from gocd_ha_operator.plugin.api import EXIT_FAILED, EXIT_USAGE, Api, PluginError, connect
from gocd_ha_operator.plugin.views import (
    ClusterView,
    describe_promotion,
    history_table,
    not_fine,
    status_screen,
    why_not,
)

PROG: Final = "kubectl gocdha"
POLL_SECONDS: Final = 0.5
#: One watch request lasts at most this long; then the object is read again and watched anew.
WATCH_SECONDS: Final = 30.0
DEFAULT_TIMEOUT_SECONDS: Final = 600.0
DEFAULT_LOG_LINES: Final = 200
#: The step after which the new primary takes writes through the Services.
WRITABLE_AFTER: Final = "SwitchingRoles"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2) like every other failure."""

    def error(self, message: str) -> Any:
        raise PluginError(f"{self.prog}: {message}")


def _connection_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument("--kubeconfig", default=default, help="path to the kubeconfig file")
    parser.add_argument("--context", default=default, help="the kubeconfig context to use")
    parser.add_argument("-n", "--namespace", default=default, help="namespace of the cluster")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Look at and promote GoCDHAClusters (gocd-ha-operator) from a terminal.",
    )
    _connection_flags(parser, suppress=False)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    status = sub.add_parser("status", help="both sides, replication, sync, failover at a glance")
    status.add_argument("name", nargs="?", help="the GoCDHACluster (default: all in namespace)")
    status.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text")

    promote = sub.add_parser("promote", help="promote the standby (switchover or failover)")
    promote.add_argument("name")
    promote.add_argument(
        "--force",
        action="store_true",
        help="gocdha.io/promote-force: promote even beyond maxLagBytes (may lose data)",
    )
    wait = promote.add_mutually_exclusive_group()
    wait.add_argument(
        "--wait",
        dest="wait",
        action="store_true",
        default=None,
        help="follow the promotion until it ends (default when stdout is a terminal)",
    )
    wait.add_argument("--no-wait", dest="wait", action="store_false")
    promote.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help=f"how long --wait follows it (default {DEFAULT_TIMEOUT_SECONDS:g})",
    )

    history = sub.add_parser("history", help="the last promotions, newest first")
    history.add_argument("name")

    whynot = sub.add_parser("why-not", help="everything that would stop a failover now")
    whynot.add_argument("name")

    logs = sub.add_parser("logs", help="the cluster's pods' logs (through the API)")
    logs.add_argument("name")
    logs.add_argument("--side", choices=SIDES, help="only this side's pods")
    logs.add_argument(
        "--tail",
        type=int,
        default=DEFAULT_LOG_LINES,
        metavar="LINES",
        help=f"last lines of each container (default {DEFAULT_LOG_LINES}; -1: all)",
    )
    for child in (status, promote, history, whynot, logs):
        _connection_flags(child, suppress=True)
    return parser


def now_utc() -> datetime:
    return datetime.now(UTC)


# --- commands -------------------------------------------------------------------------------------


def cmd_status(api: Api, args: argparse.Namespace, out: Callable[[str], None]) -> int:
    bodies = [api.cluster(args.name)] if args.name else api.clusters()
    if not bodies:
        print(f"No GoCDHACluster found in namespace {api.namespace}.", file=sys.stderr)
        return 0
    views = [ClusterView.of(b) for b in bodies]
    now = now_utc()
    if args.output == "text":
        out("\n\n".join(status_screen(v, now) for v in views))
        return 0
    documents = [
        {
            "namespace": v.namespace,
            "name": v.name,
            "status": v.status.to_api(),
            "notFine": [c.to_api() for c in not_fine(v)],
            "failoverObstacles": why_not(v, now),
        }
        for v in views
    ]
    payload: Any = documents[0] if args.name else documents
    if args.output == "json":
        out(json.dumps(payload, indent=2))
    else:
        out(yaml.safe_dump(payload, sort_keys=False).rstrip())
    return 0


def cmd_history(api: Api, args: argparse.Namespace, out: Callable[[str], None]) -> int:
    out(history_table(ClusterView.of(api.cluster(args.name))))
    return 0


def cmd_why_not(api: Api, args: argparse.Namespace, out: Callable[[str], None]) -> int:
    view = ClusterView.of(api.cluster(args.name))
    reasons = why_not(view, now_utc())
    if not reasons:
        out(f"Nothing: side {view.status.standby or 'b'} of {view.name} could take over now.")
        return 0
    out(f"A failover of {view.name} now is stopped or put at risk by:")
    for reason in reasons:
        out(f"  - {reason}")
    return 0


def cmd_logs(api: Api, args: argparse.Namespace, out: Callable[[str], None]) -> int:
    api.cluster(args.name)  # a clear "not found" before looking for pods
    pods = api.pods(args.name, args.side)
    if not pods:
        where = f" on side {args.side}" if args.side else ""
        raise PluginError(f"no pods of GoCDHACluster {args.name!r}{where} are running")
    tail = None if args.tail < 0 else args.tail
    for pod in pods:
        name = pod["metadata"]["name"]
        containers = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
        for container in containers:
            out(f"==> pod/{name} container/{container} <==")
            out(api.pod_log(name, container, tail).rstrip("\n"))
    return 0


def _token() -> str:
    """A fresh token: when and by whom it was asked, unique even within one second."""
    return f"kubectl-{now_utc().strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def cmd_promote(api: Api, args: argparse.Namespace, out: Callable[[str], None]) -> int:
    if args.timeout <= 0:
        raise PluginError("--timeout must be positive")
    view = ClusterView.of(api.cluster(args.name))
    running = view.status.promotion
    if running.result == "InProgress":
        raise PluginError(
            f"a promotion of {view.name} is already running (token {running.token!r}, "
            f"step {running.step}); follow it with `{PROG} status {view.name}`"
        )
    handled = view.status.handled_tokens
    for key, last in (
        (ANNOTATION_PROMOTE, handled.promote),
        (ANNOTATION_PROMOTE_FORCE, handled.promote_force),
    ):
        pending = view.annotations.get(key)
        if pending and pending != last:
            raise PluginError(
                f"a promotion request of {view.name} is already waiting for the operator "
                f"({key}={pending})"
            )
    key = ANNOTATION_PROMOTE_FORCE if args.force else ANNOTATION_PROMOTE
    token = _token()
    requested = time.monotonic()
    api.annotate(view.name, {key: token})
    out(f"requested: promote the standby of {view.namespace}/{view.name} ({key}={token})")
    wait = sys.stdout.isatty() if args.wait is None else args.wait
    if not wait:
        out(f"follow it with `{PROG} status {view.name}` or `{PROG} history {view.name}`")
        return 0
    return follow(api, view.name, token, requested=requested, timeout=args.timeout, out=out)


class Follower:
    """What ``promote --wait`` has seen of one promotion, fed every version of the object."""

    def __init__(self, token: str, requested: float, out: Callable[[str], None]) -> None:
        self.token = token
        self.requested = requested
        self.out = out
        self.seen: list[str] = []
        self.started: float | None = None
        self.writable: float | None = None

    def observe(self, body: dict[str, Any]) -> int | None:
        """The exit status once the promotion has ended, else ``None``."""
        view = ClusterView.of(body)
        elapsed = time.monotonic() - self.requested
        refused = next(
            (h for h in view.status.history if h.token == self.token and h.result == "Refused"),
            None,
        )
        if refused is not None:
            self.out(f"[{elapsed:6.1f}s] refused: {refused.message}")
            return EXIT_FAILED
        p = view.status.promotion
        if p.token != self.token:
            return None
        if self.started is None:
            self.started = elapsed
            self.out(f"[{elapsed:6.1f}s] started: {p.type} from side {p.from_side} to {p.to_side}")
        if p.step and (not self.seen or self.seen[-1] != p.step):
            if self.seen and self.seen[-1] == WRITABLE_AFTER and self.writable is None:
                self.writable = elapsed
            self.seen.append(p.step)
            self.out(f"[{elapsed:6.1f}s] step {p.step}")
        if p.result == "InProgress":
            return None
        if self.writable is None and p.result == "Succeeded":
            self.writable = elapsed
        return _outcome(p, elapsed, self.started, self.writable, self.out)


def follow(
    api: Api,
    name: str,
    token: str,
    *,
    requested: float,
    timeout: float,
    out: Callable[[str], None],
) -> int:
    """Print each step as the operator records it, then the outcome; 0 only on success.

    A watch delivers every status write (a step may last less than any polling interval); when
    the watch ends early or breaks off, the object is read again and the watch resumes."""
    follower = Follower(token, requested, out)
    deadline = requested + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        result = follower.observe(api.cluster(name))
        if result is not None:
            return result
        try:
            for body in api.watch_cluster(name, min(remaining, WATCH_SECONDS)):
                result = follower.observe(body)
                if result is not None:
                    return result
                if time.monotonic() >= deadline:
                    break
        except PluginError as exc:
            if exc.exit_code == EXIT_USAGE:
                raise
            time.sleep(POLL_SECONDS)  # a broken watch: read again, then watch again
    elapsed = time.monotonic() - requested
    where = f"at step {follower.seen[-1]}" if follower.seen else "not started by the operator"
    out(
        f"[{elapsed:6.1f}s] timed out after {timeout:g}s: the promotion is {where}; "
        "the operator goes on with it"
    )
    return EXIT_FAILED


def _outcome(
    p: Any,
    elapsed: float,
    started: float | None,
    writable: float | None,
    out: Callable[[str], None],
) -> int:
    out(f"[{elapsed:6.1f}s] {describe_promotion(p)}")
    if p.result != "Succeeded":
        return EXIT_FAILED
    rpo = "unknown" if p.rpo_bytes is None else f"{p.rpo_bytes} bytes"
    times = [f"picked up after {started:.1f}s" if started is not None else ""]
    if writable is not None:
        times.append(f"new primary writable after {writable:.1f}s")
    times.append(f"done after {elapsed:.1f}s")
    out(f"side {p.to_side} is primary; RPO {rpo}; " + ", ".join(t for t in times if t))
    return 0


COMMANDS: Final[dict[str, Callable[[Api, argparse.Namespace, Callable[[str], None]], int]]] = {
    "status": cmd_status,
    "promote": cmd_promote,
    "history": cmd_history,
    "why-not": cmd_why_not,
    "logs": cmd_logs,
}


def run(argv: Sequence[str], out: Callable[[str], None] | None = None) -> int:
    """The plugin with ``argv``; raises nothing: failures are printed as one line."""
    write = out or (lambda text: print(text, flush=True))
    try:
        args = build_parser().parse_args(list(argv))
        target = connect(args.kubeconfig, args.context, args.namespace)
        return COMMANDS[args.command](Api(target), args, write)
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted (a requested promotion goes on)", file=sys.stderr)
        return 130


def main() -> int:
    return run(sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["EXIT_FAILED", "EXIT_USAGE", "main", "run"]
