"""``gocd-ha-operator run``: the operator process.

kopf in standalone mode (one replica with ``strategy: Recreate``; two operators for the same
resources would collide), with the project's settings chosen once in
``handlers.configure_settings``.
Configuration errors (no namespace given, a malformed ``GOCDHA_ENDPOINTS``) exit with status 2
before anything connects.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Final

from gocd_ha_operator.api.constants import (
    DEFAULT_OPERATOR_IMAGE,
    ENV_ENDPOINTS,
    ENV_OPERATOR_IMAGE,
    operator_namespace_from,
)
from gocd_ha_operator.controller.metrics import BindAddressError, parse_bind_address
from gocd_ha_operator.kube.endpoints import EndpointConfigError, parse_overrides

EXIT_USAGE: Final = 2
LOG_FORMATS: Final = ("plain", "full", "json")
#: Where /metrics is served unless told otherwise (controller-runtime operators use :8080, which
#: is this operator's liveness port).
DEFAULT_METRICS_BIND_ADDRESS: Final = ":8081"


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

    import kopf  # noqa: PLC0415 - the other subcommands need not pay for kopf's import

    from gocd_ha_operator.controller.handlers import OperatorConfig, build_registry  # noqa: PLC0415

    log_format = {
        "plain": kopf.LogFormat.PLAIN,
        "full": kopf.LogFormat.FULL,
        "json": kopf.LogFormat.JSON,
    }[args.log_format]
    kopf.configure(verbose=args.verbose, debug=args.debug, log_format=log_format)
    from gocd_ha_operator.controller.webhook import WebhookConfig  # noqa: PLC0415

    config = OperatorConfig(
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
    kopf.run(
        registry=build_registry(config),
        clusterwide=args.all_namespaces,
        namespaces=args.namespace,
        standalone=True,
        liveness_endpoint=args.liveness,
    )
    return 0
