"""The Dockerfile's promises, checked statically (no Docker engine here: the image itself is built
by the e2e tests where one exists)."""

from __future__ import annotations

import importlib.metadata
import json
import re

from tests.support.delivery import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
INSTRUCTIONS = [
    line.strip()
    for line in re.sub(r"\\\n", " ", DOCKERFILE).splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]


def instructions(name: str) -> list[str]:
    return [i.split(None, 1)[1] for i in INSTRUCTIONS if i.split(None, 1)[0].upper() == name]


def test_multi_stage_from_one_pinned_slim_base() -> None:
    froms = instructions("FROM")
    assert len(froms) == 2
    assert froms[0].endswith(" AS build")
    bases = {f.split()[0] for f in froms}
    assert len(bases) == 1, "build and runtime use the same base"
    (base,) = bases
    m = re.fullmatch(r"python:(\d+\.\d+\.\d+)-slim-(\w+)@sha256:[0-9a-f]{64}", base)
    assert m, f"base must be python:<x.y.z>-slim-<debian>@sha256:<digest>, is {base}"


def test_runtime_installs_the_wheel_from_the_build_stage_only() -> None:
    runs = " ".join(instructions("RUN"))
    assert "pip wheel --wheel-dir /wheels ." in runs
    assert "from=build" in runs
    assert "pip install --no-index --find-links=/wheels gocd-ha-operator" in runs


def test_numeric_non_root_user() -> None:
    (user,) = instructions("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) >= 10000, user
    assert gid.isdigit() and int(gid) != 0, user


def test_entrypoint_and_default_command() -> None:
    (entrypoint,) = instructions("ENTRYPOINT")
    (cmd,) = instructions("CMD")
    assert json.loads(entrypoint) == ["gocd-ha-operator"]
    assert json.loads(cmd) == [
        "run",
        "--all-namespaces",
        "--liveness",
        "http://0.0.0.0:8080/healthz",
    ]


def test_works_for_any_uid() -> None:
    """GoCD pods run the image as uid 1000 gid 0: nothing may need a home or a writable tree."""
    env = " ".join(instructions("ENV"))
    assert "HOME=/tmp" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert instructions("WORKDIR")[-1] == "/tmp"


def test_build_context_is_small() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") :][:1] == ["*"], "deny everything, then allow"
    assert {"!pyproject.toml", "!README.md", "!operator/"} <= set(ignore)


def test_operator_image_does_not_contain_kmock() -> None:
    """kmock (the demo's API emulator) is only in the ``demo`` extra, and the image installs the
    package without extras: the wheels built by ``pip wheel .`` and installed by name are the
    package's unconditional dependencies only."""
    runs = " ".join(instructions("RUN"))
    installs = re.findall(r"pip install [^&]*?(gocd-ha-operator\S*)", runs)
    assert installs == ["gocd-ha-operator"], installs
    assert "pip wheel --wheel-dir /wheels . " in runs + " ", "the wheel is built without extras"

    requirements = importlib.metadata.requires("gocd-ha-operator") or []
    kmock = [r for r in requirements if re.match(r"kmock\b", r)]
    assert kmock, f"kmock is not declared at all: {requirements}"
    for requirement in kmock:
        _name, _, marker = requirement.partition(";")
        assert marker.strip() == 'extra == "demo"', requirement
