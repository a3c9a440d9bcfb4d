"""Which side is primary and what a promotion has done to each side, as one value.

The builders render children from a :class:`Topology`; the promotion rules decide it
(:func:`gocd_ha_operator.rules.promotion.topology_of`) from status, and
:func:`primary_from_instances` checks status against what the instances say. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from gocd_ha_operator.api.constants import SIDES, Role, Side, other_side


@dataclass(frozen=True)
class Topology:
    """Which side is primary, and what a promotion has done to the sides so far.

    * ``fenced``: the side's GoCD server is stopped and no role Service selects it;
    * ``stopped``: the side's Postgres StatefulSet is at 0 replicas;
    * ``maintenance``: the side's GoCD server starts in maintenance mode (a promoted server,
      when the resource asks for it).
    """

    primary: Side = "a"
    fenced: frozenset[Side] = field(default_factory=frozenset)
    stopped: frozenset[Side] = field(default_factory=frozenset)
    maintenance: frozenset[Side] = field(default_factory=frozenset)

    @property
    def standby(self) -> Side:
        return other_side(self.primary)

    def role(self, side: Side) -> Role:
        return "primary" if side == self.primary else "standby"

    def running(self, side: Side) -> bool:
        """Whether the side serves: not fenced (its GoCD may run and Services may select it)."""
        return side not in self.fenced

    def postgres_running(self, side: Side) -> bool:
        return side not in self.stopped

    def __post_init__(self) -> None:
        sides = set(SIDES)
        if self.primary not in sides or not self.fenced | self.stopped | self.maintenance <= sides:
            raise ValueError(f"invalid topology: {self!r}")


class PrimaryEvidence(StrEnum):
    """Why :func:`primary_from_instances` decided as it did."""

    ONLY_WRITABLE = "OnlyWritable"
    NEWER_TIMELINE = "NewerTimeline"
    NO_WRITABLE = "NoWritableInstance"
    SAME_TIMELINE = "TwoWritableSameTimeline"
    STALE_WRITABLE = "WritableOnOlderTimeline"


@dataclass(frozen=True)
class InstanceReading:
    """What one instance says about itself (``reachable=False``: nothing is known)."""

    reachable: bool
    in_recovery: bool | None = None
    timeline: int | None = None
    lsn: int | None = None


@dataclass(frozen=True)
class PrimaryVerdict:
    """The side the instances show as primary (``None``: they do not say; keep the record)."""

    side: Side | None
    evidence: PrimaryEvidence
    message: str


def primary_from_instances(
    readings: Mapping[Side, InstanceReading],
    *,
    known_timelines: Mapping[Side, int | None] | None = None,
) -> PrimaryVerdict:
    """Which side is primary, from the instances alone — never from memory.

    Status can be stale (an etcd or backup restore brings back a pre-promotion snapshot) or
    missing; the instances cannot lie about being writable, and a promotion always starts a newer
    timeline. So:

    * exactly one side is writable (reachable, not in recovery) → that side, unless the other
      side, unreachable now, was last seen on a *newer* timeline (then the writable one is the
      stale former primary: no verdict);
    * both are writable (two primaries) → the one on the newer timeline; the same timeline is no
      verdict (nothing tells them apart);
    * none is writable → no verdict (a failover may be pending; the record stands).

    ``known_timelines`` are the timelines last recorded for each side (for a side that cannot be
    reached now).
    """
    known = known_timelines or {}
    writable = [s for s, r in readings.items() if r.reachable and r.in_recovery is False]

    def timeline(side: Side) -> int | None:
        reading = readings.get(side)
        if reading is not None and reading.reachable and reading.timeline is not None:
            return reading.timeline
        return known.get(side)

    if not writable:
        return PrimaryVerdict(None, PrimaryEvidence.NO_WRITABLE, "no instance accepts writes")
    if len(writable) == 2:
        a, b = timeline("a"), timeline("b")
        if a is None or b is None or a == b:
            return PrimaryVerdict(
                None,
                PrimaryEvidence.SAME_TIMELINE,
                f"both instances accept writes (timelines {a} and {b}): nothing tells them apart",
            )
        newer: Side = "a" if a > b else "b"
        return PrimaryVerdict(
            newer,
            PrimaryEvidence.NEWER_TIMELINE,
            f"both instances accept writes; side {newer} is on the newer timeline "
            f"({max(a, b)} > {min(a, b)})",
        )
    side = writable[0]
    other = other_side(side)
    mine, theirs = timeline(side), timeline(other)
    other_reading = readings.get(other)
    other_down = other_reading is None or not other_reading.reachable
    if other_down and mine is not None and theirs is not None and theirs > mine:
        return PrimaryVerdict(
            None,
            PrimaryEvidence.STALE_WRITABLE,
            f"side {side} accepts writes on timeline {mine}, but side {other} was last seen on "
            f"timeline {theirs}: side {side} may be a former primary",
        )
    return PrimaryVerdict(
        side,
        PrimaryEvidence.ONLY_WRITABLE,
        f"side {side} is the only instance that accepts writes (timeline {mine})",
    )
