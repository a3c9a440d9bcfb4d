"""Versions read from container image references.

The GoCD version decides the standby mode: GoCD's business-continuity feature (Warm standby) exists
only up to 21.2.0; it was disabled in 21.3.0 and removed in 23.1.0. The Postgres major version
decides which settings and grants exist. Both are read from the image tag because that is the only
version information a user gives; digests and tags such as ``latest`` carry none, and then the
user has to say what they want explicitly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

# ``v21.2.0``, ``21.2.0``, ``v26.1.0-1234``, ``v20.5.0-11820``: the official GoCD tag forms.
_GOCD_TAG: Final = re.compile(
    r"^v?(?P<major>\d+)\.(?P<minor>\d+)\.(?P<patch>\d+)(?:-[0-9A-Za-z.-]+)?$"
)
# ``17``, ``16.4``, ``15-alpine``, ``17.2-bookworm``: the official postgres tag forms.
_POSTGRES_TAG: Final = re.compile(r"^(?P<major>\d+)(?:\.\d+)?(?:-[0-9A-Za-z.-]+)?$")


@dataclass(frozen=True, order=True)
class GoCDVersion:
    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


#: Last GoCD release with the business-continuity feature (Warm standby).
LAST_WARM_VERSION: Final = GoCDVersion(21, 2, 0)
#: First release with the feature built in; earlier ones need the commercial add-on jar.
FIRST_BUILTIN_BC_VERSION: Final = GoCDVersion(20, 6, 0)
#: First release with the token-file authentication the operator uses.
FIRST_TOKEN_BC_VERSION: Final = GoCDVersion(18, 8, 0)
#: ``-Dgocd.server.start.in.maintenance.mode`` exists from this release on.
FIRST_START_IN_MAINTENANCE_VERSION: Final = GoCDVersion(20, 9, 0)

SUPPORTED_POSTGRES_MAJORS: Final = range(13, 18)


def image_tag(image: str) -> str | None:
    """The tag of an image reference, or ``None`` when it has none.

    ``registry:5000/gocd/gocd-server:v21.2.0@sha256:…`` has the tag ``v21.2.0``: the digest is
    dropped and a registry port is not mistaken for a tag.
    """
    name = image.split("@", 1)[0]
    last_segment = name.rsplit("/", 1)[-1]
    if ":" not in last_segment:
        return None
    return last_segment.rsplit(":", 1)[1] or None


def parse_gocd_version(image: str) -> GoCDVersion | None:
    """The GoCD version of an image reference, or ``None`` when its tag is not a version."""
    tag = image_tag(image)
    if tag is None:
        return None
    match = _GOCD_TAG.match(tag)
    if match is None:
        return None
    return GoCDVersion(int(match["major"]), int(match["minor"]), int(match["patch"]))


def parse_postgres_major(image: str) -> int | None:
    """The PostgreSQL major version of an image reference, or ``None`` when the tag has none."""
    tag = image_tag(image)
    if tag is None:
        return None
    match = _POSTGRES_TAG.match(tag)
    return int(match["major"]) if match else None


def is_alpine_image(image: str) -> bool:
    """Alpine-based postgres images run as uid 70 instead of the Debian images' 999."""
    tag = image_tag(image) or ""
    return "alpine" in tag


#: Where a major-version upgrade of PostgreSQL is described (cited in refusals).
MAJOR_UPGRADE_DOC: Final = 'docs/operator.md, "Upgrading PostgreSQL to a new major version"'


def image_change_problem(old: str, new: str) -> str | None:
    """Why the Postgres image of a running cluster may not change from ``old`` to ``new``, or
    ``None`` when the change can be rolled one instance at a time (same major version, same
    user id). Unknown tags are refused: the operator cannot tell whether new binaries would meet
    old data, and a roll must never find out by starting them."""
    if old == new:
        return None
    before, after = parse_postgres_major(old), parse_postgres_major(new)
    if before is None or after is None:
        unknown = old if before is None else new
        return (
            f"cannot tell the PostgreSQL major version of {unknown!r} from its tag, so the change "
            f"from {old!r} to {new!r} is not rolled (new binaries must never start on another "
            "major version's data); use tags that start with the version, such as postgres:15.6"
        )
    if before != after:
        return (
            f"changes the PostgreSQL major version from {before} to {after}: PostgreSQL {after} "
            f"cannot start on the data directory of PostgreSQL {before}, so the operator does not "
            f"roll it. Keep a PostgreSQL {before} image here; to upgrade, create a new "
            f"GoCDHACluster with the {after} image and move the database to it "
            f"({MAJOR_UPGRADE_DOC})"
        )
    if is_alpine_image(old) != is_alpine_image(new):
        return (
            f"changes between an Alpine and a Debian image ({old!r} to {new!r}): they run "
            "Postgres as different user ids (70 and 999), which could not read the existing data "
            "directory; keep the same image variant"
        )
    return None
