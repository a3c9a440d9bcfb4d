"""``gocd-ha-operator run``: the operator process.

kopf in standalone mode, with the project's settings chosen once in
``handlers.configure_settings``. With ``--leader-election`` (the default) the process first takes
the Lease ``gocd-ha-operator`` in ``--leader-election-namespace`` and runs kopf only while it holds
it (``controller/leader.py``): several replicas may run, exactly one acts. While it waits it serves
the liveness endpoint itself, so a waiting replica is not restarted for being idle.
Configuration errors (no namespace given, a malformed ``GOCDHA_ENDPOINTS``) exit with status 2
before anything connects.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from gocd_ha_operator.api.constants import (
    DEFAULT_OPERATOR_IMAGE,
    ENV_ENDPOINTS,
    ENV_OPERATOR_IMAGE,
    OPERATOR_LEASE_NAME,
    operator_namespace_from,
)
from gocd_ha_operator.controller.metrics import BindAddressError, parse_bind_address
from gocd_ha_operator.kube.endpoints import EndpointConfigError, parse_overrides

EXIT_USAGE: Final = 2
LOG_FORMATS: Final = ("plain", "full", "json")
#: Where /metrics is served unless told otherwise (controller-runtime operators use :8080, which
#: is this operator's liveness port).
DEFAULT_METRICS_BIND_ADDRESS: Final = ":8081"
SERVICE_ACCOUNT_NAMESPACE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch GoCDHAClusters in this namespace (repeatable)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument(
        "--liveness",
        metavar="URL",
        default=None,
        help="serve a liveness endpoint, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, default="full", help="log line format (default: full)"
    )
    parser.add_argument(
        "--observe-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how often each cluster is observed and its status refreshed (default: 10)",
    )
    hook = parser.add_argument_group(
        "admission webhook", "validate GoCDHACluster objects when they are applied"
    )
    hook.add_argument(
        "--webhook-port", type=int, metavar="PORT", help="serve the webhook (HTTPS) on this port"
    )
    hook.add_argument(
        "--webhook-service", metavar="NAME", help="the Service in front of the webhook"
    )
    hook.add_argument(
        "--webhook-secret",
        metavar="NAME",
        help="Secret (in the operator's namespace) that keeps the generated certificate",
    )
    hook.add_argument(
        "--webhook-configuration",
        metavar="NAME",
        help="ValidatingWebhookConfiguration whose caBundle the operator keeps current",
    )
    hook.add_argument(
        "--webhook-cert-dir",
        metavar="DIR",
        help="use the mounted certificate here (tls.crt, tls.key, ca.crt; e.g. cert-manager)",
    )
    parser.add_argument(
        "--metrics-bind-address",
        default=DEFAULT_METRICS_BIND_ADDRESS,
        metavar="[HOST]:PORT",
        help="serve Prometheus metrics at /metrics here; 0 turns them off "
        f"(default: {DEFAULT_METRICS_BIND_ADDRESS})",
    )
    election = parser.add_argument_group("leader election (several replicas, one acts)")
    election.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run handlers only while holding the Lease gocd-ha-operator (default: on)",
    )
    election.add_argument(
        "--leader-election-namespace",
        metavar="NS",
        default=None,
        help="namespace of the Lease (default: $POD_NAMESPACE, else the pod's own namespace)",
    )
    election.add_argument(
        "--leader-election-lease-duration",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="how long a waiting replica waits for an unchanged Lease before taking it (15)",
    )
    election.add_argument(
        "--leader-election-renew-deadline",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="the leader exits when it could not renew for this long (10)",
    )
    election.add_argument(
        "--leader-election-retry-period",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how often the Lease is renewed or tried (2)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log handler details")
    parser.add_argument("--debug", action="store_true", help="log everything, kopf included")


def _webhook_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the webhook options, or ``None``."""
    if not 1 <= args.webhook_port <= 65535:
        return "--webhook-port must be between 1 and 65535"
    if not args.webhook_service:
        return "--webhook-port needs --webhook-service (the certificate names it)"
    if args.webhook_cert_dir is None and not args.webhook_secret:
        return "--webhook-port needs --webhook-secret, or --webhook-cert-dir for a mounted one"
    if args.webhook_cert_dir is not None and not Path(args.webhook_cert_dir).is_dir():
        return f"--webhook-cert-dir: {args.webhook_cert_dir!r} is not a directory"
    return None


def run(args: argparse.Namespace) -> int:
    if not args.namespace and not args.all_namespaces:
        print("run: give --namespace NS (repeatable) or --all-namespaces", file=sys.stderr)
        return EXIT_USAGE
    if not 1.0 <= args.observe_interval <= 3600:
        print("run: --observe-interval must be between 1 and 3600 seconds", file=sys.stderr)
        return EXIT_USAGE
    try:
        endpoints = parse_overrides(os.environ.get(ENV_ENDPOINTS))
        operator_namespace = operator_namespace_from(os.environ)
        metrics_address = parse_bind_address(args.metrics_bind_address)
    except (EndpointConfigError, BindAddressError, ValueError) as exc:
        print(f"run: {exc}", file=sys.stderr)
        return EXIT_USAGE

    webhook_options = (
        args.webhook_service,
        args.webhook_secret,
        args.webhook_configuration,
        args.webhook_cert_dir,
    )
    if args.webhook_port is None and any(o is not None for o in webhook_options):
        print("run: the --webhook-* options need --webhook-port", file=sys.stderr)
        return EXIT_USAGE
    if args.webhook_port is not None:
        problem = _webhook_problem(args)
        if problem is not None:
            print(f"run: {problem}", file=sys.stderr)
            return EXIT_USAGE

    election_namespace = _election_namespace(args)
    if args.leader_election:
        problem = _election_problem(args, election_namespace)
        if problem is not None:
            print(f"run: {problem}", file=sys.stderr)
            return EXIT_USAGE

    import kopf  # noqa: PLC0415 - the other subcommands need not pay for kopf's import

    from gocd_ha_operator.controller.handlers import OperatorConfig, build_registry  # noqa: PLC0415
    from gocd_ha_operator.controller.leader import LeaderElector  # noqa: PLC0415
    from gocd_ha_operator.kube.apply import KubeClient, default_client  # noqa: PLC0415

    log_format = {
        "plain": kopf.LogFormat.PLAIN,
        "full": kopf.LogFormat.FULL,
        "json": kopf.LogFormat.JSON,
    }[args.log_format]
    kopf.configure(verbose=args.verbose, debug=args.debug, log_format=log_format)
    from gocd_ha_operator.controller.webhook import WebhookConfig  # noqa: PLC0415

    elector: LeaderElector | None = None
    if args.leader_election:
        elector = LeaderElector(
            default_client(request_timeout=args.leader_election_retry_period),
            namespace=str(election_namespace),
            name=OPERATOR_LEASE_NAME,
            identity=_identity(),
            lease_duration=args.leader_election_lease_duration,
            renew_deadline=args.leader_election_renew_deadline,
            retry_period=args.leader_election_retry_period,
        )

    def kube_factory() -> KubeClient:
        # The handlers' client: with leader election, it sends no write past the renew deadline.
        kube = default_client()
        return kube if elector is None else elector.guard(kube)

    config = OperatorConfig(
        kube_factory=kube_factory,
        operator_image=os.environ.get(ENV_OPERATOR_IMAGE, DEFAULT_OPERATOR_IMAGE),
        observe_interval=args.observe_interval,
        endpoints=endpoints or None,
        operator_namespace=operator_namespace,
        webhook=None
        if args.webhook_port is None
        else WebhookConfig(
            port=args.webhook_port,
            service=args.webhook_service,
            namespace=operator_namespace,
            secret=args.webhook_secret,
            configuration=args.webhook_configuration,
            cert_dir=Path(args.webhook_cert_dir) if args.webhook_cert_dir else None,
        ),
        metrics_address=metrics_address,
    )
    if elector is not None:
        with _liveness_while_waiting(args.liveness):
            if not elector.acquire():
                return 0
        elector.keep()
    kopf.run(
        registry=build_registry(config),
        clusterwide=args.all_namespaces,
        namespaces=args.namespace,
        standalone=True,
        liveness_endpoint=args.liveness,
    )
    if elector is not None:
        elector.release()
    return 0


def _election_namespace(args: argparse.Namespace) -> str | None:
    if args.leader_election_namespace:
        return str(args.leader_election_namespace)
    for variable in ("POD_NAMESPACE", "GOCDHA_OPERATOR_NAMESPACE"):
        if os.environ.get(variable):
            return os.environ[variable]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


def _election_problem(args: argparse.Namespace, namespace: str | None) -> str | None:
    if namespace is None:
        return (
            "--leader-election needs --leader-election-namespace (or POD_NAMESPACE); "
            "--no-leader-election runs a single replica without it"
        )
    retry = args.leader_election_retry_period
    deadline = args.leader_election_renew_deadline
    duration = args.leader_election_lease_duration
    if not 0 < retry < deadline < duration:
        return (
            "need 0 < --leader-election-retry-period < --leader-election-renew-deadline < "
            f"--leader-election-lease-duration (got {retry:g} < {deadline:g} < {duration:g})"
        )
    return None


def _identity() -> str:
    """The pod name in a cluster (unique per replica); host and pid elsewhere."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


class _Healthz(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"leader": false}')

    def log_message(self, *_: object) -> None:
        return


@contextlib.contextmanager
def _liveness_while_waiting(url: str | None) -> Iterator[None]:
    """A waiting replica is alive: answer the liveness probe until kopf serves it itself."""
    if url is None:
        yield
        return
    parts = urlsplit(url)
    server = http.server.ThreadingHTTPServer(
        (parts.hostname or "127.0.0.1", parts.port or 80), _Healthz
    )
    thread = threading.Thread(target=server.serve_forever, name="standby-liveness", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
