from __future__ import annotations

import pytest

from gocd_ha_operator.api.versions import (
    GoCDVersion,
    image_tag,
    is_alpine_image,
    parse_gocd_version,
    parse_postgres_major,
)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("gocd/gocd-server:v21.2.0", GoCDVersion(21, 2, 0)),
        ("gocd/gocd-server:21.2.0", GoCDVersion(21, 2, 0)),
        ("gocd/gocd-server:v26.1.0-1234", GoCDVersion(26, 1, 0)),
        ("docker.io/gocd/gocd-server:v20.5.0-11820", GoCDVersion(20, 5, 0)),
        ("registry:5000/gocd/gocd-server:v23.1.0", GoCDVersion(23, 1, 0)),
        ("gocd/gocd-server:v24.3.0@sha256:" + "a" * 64, GoCDVersion(24, 3, 0)),
        ("gocd/gocd-server@sha256:" + "b" * 64, None),
        ("gocd/gocd-server:latest", None),
        ("gocd/gocd-server", None),
        ("registry:5000/gocd/gocd-server", None),
        ("gocd/gocd-server:v21.2", None),
        ("gocd/gocd-server:nightly-21.2.0", None),
    ],
)
def test_gocd_version_is_read_from_the_tag(image: str, expected: GoCDVersion | None) -> None:
    assert parse_gocd_version(image) == expected


def test_versions_compare_numerically() -> None:
    assert GoCDVersion(21, 10, 0) > GoCDVersion(21, 2, 0)
    assert GoCDVersion(9, 0, 0) < GoCDVersion(18, 8, 0)
    assert str(GoCDVersion(21, 2, 0)) == "21.2.0"


@pytest.mark.parametrize(
    ("image", "major"),
    [
        ("postgres:17", 17),
        ("postgres:16.4", 16),
        ("postgres:15-alpine", 15),
        ("docker.io/library/postgres:13.16-bookworm", 13),
        ("postgres", None),
        ("postgres:latest", None),
        ("postgres@sha256:" + "c" * 64, None),
    ],
)
def test_postgres_major_is_read_from_the_tag(image: str, major: int | None) -> None:
    assert parse_postgres_major(image) == major


def test_image_tag_ignores_registry_port_and_digest() -> None:
    assert image_tag("host:5000/a/b") is None
    assert image_tag("host:5000/a/b:1.0@sha256:" + "d" * 64) == "1.0"


def test_alpine_images_are_recognised() -> None:
    assert is_alpine_image("postgres:16-alpine3.20")
    assert not is_alpine_image("postgres:16")
