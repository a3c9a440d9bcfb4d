"""The Events that announce condition transitions: one per transition, and one for a cluster's
first observation (issue #16)."""

from __future__ import annotations

from datetime import UTC, datetime

from gocd_ha_operator.api import conditions as cond
from gocd_ha_operator.api.status import Condition, ConditionStatus
from gocd_ha_operator.controller.observe import FIRST_OBSERVATION_REASON, events_for

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def transition(
    type_: str, status: ConditionStatus, reason: str, old: ConditionStatus | None = "Unknown"
) -> cond.Transition:
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=f"{type_} is {status}: {reason}",
        observed_generation=1,
        last_transition_time=cond.rfc3339(NOW),
    )
    return cond.Transition(type_, old, new)


FIRST = [
    transition(cond.PRIMARY_AVAILABLE, "False", "PrimaryUnreachable"),
    transition(cond.PROMOTING, "False", "Idle"),
    transition(cond.READY, "False", "PrimaryUnavailable"),
]


def test_a_first_observation_is_one_event_listing_every_condition() -> None:
    events = events_for(FIRST, first_observation=True)
    assert len(events) == 1
    kind, reason, message = events[0]
    assert (kind, reason) == ("Warning", FIRST_OBSERVATION_REASON)
    assert message.startswith(
        "first observation: Ready False (PrimaryUnavailable); "
        "PrimaryAvailable False (PrimaryUnreachable); Promoting False (Idle). Ready: "
    )
    assert message.endswith("Ready is False: PrimaryUnavailable")


def test_a_first_observation_without_bad_news_is_normal() -> None:
    good = [
        transition(cond.READY, "True", "Ready"),
        transition(cond.PROMOTING, "False", "Idle"),
    ]
    assert [e[:2] for e in events_for(good, first_observation=True)] == [
        ("Normal", FIRST_OBSERVATION_REASON)
    ]


def test_later_transitions_get_an_event_each() -> None:
    events = events_for(FIRST, first_observation=False)
    assert [e[1] for e in events] == ["PrimaryUnreachable", "Idle", "PrimaryUnavailable"]
    assert events[0] == (
        "Warning",
        "PrimaryUnreachable",
        "PrimaryAvailable Unknown -> False: PrimaryAvailable is False: PrimaryUnreachable",
    )


def test_a_single_first_transition_keeps_its_own_reason() -> None:
    """An invalid spec at the first visit: ``Ready`` alone, announced as ``InvalidSpec``."""
    only = [transition(cond.READY, "False", "InvalidSpec")]
    assert [e[1] for e in events_for(only, first_observation=True)] == ["InvalidSpec"]


def test_a_certificate_verdict_keeps_its_own_event_at_the_first_observation() -> None:
    invalid = transition(cond.CERTIFICATE_READY, "False", "CertificateInvalid", old=None)
    events = events_for([*FIRST, invalid], first_observation=True)
    assert [(e[0], e[1]) for e in events] == [
        ("Warning", FIRST_OBSERVATION_REASON),
        ("Warning", "CertificateInvalid"),
    ]
    assert "CertificateReady" not in events[0][2]


def test_the_summary_fits_an_event() -> None:
    long = [
        transition(cond.READY, "False", "PrimaryUnavailable"),
        *(transition(f"Condition{i}", "False", "Reason" * 10) for i in range(40)),
    ]
    [(_, _, message)] = events_for(long, first_observation=True)
    assert len(message) == 1000
