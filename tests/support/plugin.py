"""Helpers of the plugin tests: a kubeconfig pointing at an API server, the plugin run in a thread
(its client is synchronous; the emulator serves from the test's event loop), and objects stored
as the operator would have left them."""

from __future__ import annotations

import asyncio
import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gocd_ha_operator.local.emulator import OperatorEmulator
from gocd_ha_operator.plugin.main import run

NAMESPACE = "build"


def write_kubeconfig(path: Path, server: str, namespace: str | None = NAMESPACE) -> Path:
    context: dict[str, Any] = {"cluster": "emu", "user": "me"}
    if namespace:
        context["namespace"] = namespace
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emu", "cluster": {"server": server}}],
                "users": [{"name": "me", "user": {"token": "not-a-secret"}}],
                "contexts": [
                    {"name": "emu", "context": context},
                    {
                        "name": "other",
                        "context": {"cluster": "emu", "user": "me", "namespace": "x"},
                    },
                ],
                "current-context": "emu",
            }
        )
    )
    return path


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Plugin:
    kubeconfig: Path

    async def __call__(self, *argv: str) -> Result:
        return await asyncio.to_thread(invoke, ["--kubeconfig", str(self.kubeconfig), *argv])


def invoke(argv: list[str]) -> Result:
    lines: list[str] = []
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = run(argv, out=lines.append)
    return Result(code, "\n".join(lines), err.getvalue())


@dataclass
class Emulated:
    emulator: OperatorEmulator
    url: str
    plugin: Plugin

    def put(self, body: dict[str, Any]) -> None:
        """Store an object as the operator would have left it (status included)."""
        meta = body["metadata"]
        plural = "gocdhaclusters" if body["kind"] == "GoCDHACluster" else "pods"
        group = "gocdha.io/v1alpha1" if plural == "gocdhaclusters" else "v1"
        self.emulator.objects[group + "/" + plural, meta["namespace"], meta["name"]] = body

    def stored(self, name: str) -> dict[str, Any]:
        obj = self.emulator.objects["gocdha.io/v1alpha1/gocdhaclusters", NAMESPACE, name]
        raw: dict[str, Any] = obj.raw
        return raw
