"""``gocd-ha-operator render -f FILE``: every child of a GoCDHACluster as YAML, no cluster needed.

Useful to review what the operator will create, to diff two versions of a resource, and for GitOps
pipelines that want to see manifests. Credentials and the TLS CA and server certificate are
generated afresh on every run (like ``helm template``): the operator itself generates them once
and keeps them in Secrets.
Invalid input exits with status 2 and one line per problem naming the field; never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from typing import Any, Final

import yaml

from gocd_ha_operator.api.constants import (
    DEFAULT_OPERATOR_IMAGE,
    DEFAULT_OPERATOR_NAMESPACE,
    ENV_OPERATOR_IMAGE,
    ENV_OPERATOR_NAMESPACE,
    SIDES,
    operator_namespace_from,
)
from gocd_ha_operator.api.credentials import ClusterCredentials
from gocd_ha_operator.api.spec import GoCDHACluster, parse_cluster
from gocd_ha_operator.api.validation import SpecError
from gocd_ha_operator.api.yamlio import YamlShapeError, dump_all_yaml, load_all_yaml
from gocd_ha_operator.builders import BuildInputs, build_children
from gocd_ha_operator.controller.tls import fresh_certificate_secrets
from gocd_ha_operator.rules.topology import Topology

EXIT_INVALID: Final = 2
#: Larger input is refused before parsing: no GoCDHACluster file comes near it.
MAX_INPUT_BYTES: Final = 4 * 1024 * 1024


class RenderError(Exception):
    """The input cannot be rendered; the message says why, naming the file and field."""


def load_clusters(text: str, source: str, namespace: str | None) -> list[GoCDHACluster]:
    """Parse every document of ``text``; collect all problems before failing."""
    try:
        documents = load_all_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "could not be parsed"
        raise RenderError(f"{source}: not valid YAML{where}: {problem}") from None
    except YamlShapeError as exc:
        raise RenderError(f"{source}: {exc}") from None
    if not documents:
        raise RenderError(f"{source}: contains no GoCDHACluster")
    clusters: list[GoCDHACluster] = []
    messages: list[str] = []
    for index, raw in enumerate(documents):
        prefix = f"{source}" if len(documents) == 1 else f"{source} (document {index + 1})"
        document = raw
        # Only a mapping gets the namespace; anything else is left for the model to name.
        if isinstance(raw, dict) and namespace is not None:
            metadata = raw.get("metadata")
            if metadata is None or isinstance(metadata, dict):
                document = {**raw, "metadata": {"namespace": namespace, **(metadata or {})}}
        try:
            clusters.append(parse_cluster(document))
        except SpecError as exc:
            messages.extend(f"{prefix}: {problem}" for problem in exc.problems)
    if messages:
        raise RenderError("\n".join(messages))
    return clusters


def render_cluster(
    cluster: GoCDHACluster,
    *,
    primary: str | None,
    operator_image: str,
    operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE,
) -> list[dict[str, Any]]:
    side = primary or cluster.status.primary or "a"
    if side not in SIDES:
        raise RenderError(f"--primary: {side!r} is not a side (allowed: a, b)")
    topology = Topology(primary="a" if side == "a" else "b")
    inputs = BuildInputs(
        cluster=cluster,
        topology=topology,
        credentials=ClusterCredentials.generate(),
        operator_image=operator_image,
        operator_namespace=operator_namespace,
    )
    # The TLS Secrets the reconcile would create (docs/architecture.md §17), fresh like the
    # credentials: the pods mount them.
    return [*build_children(inputs), *fresh_certificate_secrets(cluster, now=datetime.now(UTC))]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", required=True, help="GoCDHACluster YAML file, or -")
    parser.add_argument("-n", "--namespace", help="namespace when the file names none")
    parser.add_argument(
        "--primary", choices=list(SIDES), help="render with this side primary (default: a)"
    )
    parser.add_argument(
        "--operator-image",
        default=os.environ.get(ENV_OPERATOR_IMAGE, DEFAULT_OPERATOR_IMAGE),
        help=f"image for the sync agent and init containers (env {ENV_OPERATOR_IMAGE})",
    )
    parser.add_argument(
        "--operator-namespace",
        default=None,
        help="namespace the operator runs in, admitted by the Postgres NetworkPolicy "
        f"(env {ENV_OPERATOR_NAMESPACE}, default {DEFAULT_OPERATOR_NAMESPACE})",
    )


def run(args: argparse.Namespace) -> int:
    source = "<stdin>" if args.filename == "-" else args.filename
    environ = dict(os.environ)
    if args.operator_namespace is not None:
        environ[ENV_OPERATOR_NAMESPACE] = args.operator_namespace
    try:
        operator_namespace = operator_namespace_from(environ)
    except ValueError as exc:
        message = str(exc)
        if args.operator_namespace is not None:
            message = message.replace(ENV_OPERATOR_NAMESPACE, "--operator-namespace", 1)
        print(message, file=sys.stderr)
        return EXIT_INVALID
    try:
        if args.filename == "-":
            data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            with open(args.filename, "rb") as handle:
                data = handle.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        print(f"{source}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INVALID
    if len(data) > MAX_INPUT_BYTES:
        print(f"{source}: larger than {MAX_INPUT_BYTES} bytes", file=sys.stderr)
        return EXIT_INVALID
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        print(
            f"{source}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            file=sys.stderr,
        )
        return EXIT_INVALID
    try:
        clusters = load_clusters(text, source, args.namespace)
        objects = [
            child
            for cluster in clusters
            for child in render_cluster(
                cluster,
                primary=args.primary,
                operator_image=args.operator_image,
                operator_namespace=operator_namespace,
            )
        ]
    except RenderError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_INVALID
    try:
        sys.stdout.write(dump_all_yaml(objects))
        sys.stdout.flush()
    except BrokenPipeError:
        # `render … | head`: the reader went away; that is not an error of the input.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0
