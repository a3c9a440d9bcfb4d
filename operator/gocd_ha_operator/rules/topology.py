"""Which side is primary and what a promotion has done to each side, as one value.

The builders render children from a :class:`Topology`; the promotion rules decide it
(:func:`gocd_ha_operator.rules.promotion.topology_of`). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
