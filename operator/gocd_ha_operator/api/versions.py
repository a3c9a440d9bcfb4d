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
