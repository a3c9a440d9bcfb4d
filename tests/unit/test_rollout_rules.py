"""Configuration changes (docs/architecture.md §16): which image changes are rolled, what is
pending, which step of a rolling restart comes next, and what the builders render from pins."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gocd_ha_operator.api.constants import (
    ANNOTATION_RESTART_REVISION,
    CM_ENTRYPOINT,
    HOT_STANDBY_SENSITIVE_SETTINGS,
    SIDES,
    Side,
)
from gocd_ha_operator.api.immutability import immutable_problems
from gocd_ha_operator.api.spec import parse_cluster
from gocd_ha_operator.api.status import ConfigurationStatus, PromotionStatus, RolloutStatus
from gocd_ha_operator.api.versions import image_change_problem
from gocd_ha_operator.builders import BuildInputs
from gocd_ha_operator.builders.postgres import build_postgres_statefulset
from gocd_ha_operator.postgres import config as pgconfig
from gocd_ha_operator.postgres.config import loaded_revision, render_postgresql_conf
from gocd_ha_operator.rules.promotion import Step
from gocd_ha_operator.rules.rollout import (
    ConfigReason,
    InstanceView,
    Pin,
    RolloutDecision,
    RolloutInput,
    RolloutStep,
    decide,
    effective_pins,
)
from tests.support.clusters import CREDENTIALS
from tests.support.memkube import MemoryKube, apply_step
from tests.support.rollout import IMAGE_CHANGES

NOW = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
OLD, NEW = "postgres:15.4", "postgres:15.6"
REV = "r2"


@pytest.mark.parametrize(("old", "new", "fragment"), IMAGE_CHANGES)
def test_image_changes_rolled_or_refused(old: str, new: str, fragment: str | None) -> None:
    problem = image_change_problem(old, new)
    if fragment is None:
        assert problem is None
    else:
        assert problem is not None and fragment in problem
        assert "docs/operator.md" in problem or "tag" in problem or "variant" in problem


def test_a_major_version_change_says_how_to_upgrade() -> None:
    problem = image_change_problem("postgres:15", "postgres:16")
    assert problem is not None
    assert "create a new GoCDHACluster" in problem
    assert "Upgrading PostgreSQL to a new major version" in problem


def test_the_webhook_rules_refuse_a_major_change_naming_the_field(
    body: Callable[..., dict[str, Any]],
) -> None:
    old = body({"postgres": {"image": "postgres:15.4"}})
    assert immutable_problems(old, body({"postgres": {"image": "postgres:15.6"}})) == []
    problems = immutable_problems(old, body({"postgres": {"image": "postgres:16.1"}}))
    assert [p.path for p in problems] == ["spec.postgres.image"]
    assert "from 15 to 16" in str(problems[0])


def test_the_rendered_configuration_names_its_revision() -> None:
    one = render_postgresql_conf(parameters={"work_mem": "8MB"}, synchronous=False)
    two = render_postgresql_conf(parameters={"work_mem": "16MB"}, synchronous=False)
    sync = render_postgresql_conf(parameters={"work_mem": "8MB"}, synchronous=True)
    revisions = {loaded_revision(text) for text in (one, two, sync)}
    assert None not in revisions and len(revisions) == 3
    assert loaded_revision(one) == loaded_revision(
        render_postgresql_conf(parameters={"work_mem": "8MB"}, synchronous=False)
    )


# --- the rolling restart, step by step -------------------------------------------------------


def streaming(
    started: str = "t0", pending: tuple[str, ...] = (), rev: str = REV, **seen: Any
) -> InstanceView:
    return InstanceView(
        reachable=True,
        in_recovery=True,
        streaming=True,
        revision=rev,
        pending_restart=pending,
        started_at=started,
        **seen,
    )


def serving(
    started: str = "t0", pending: tuple[str, ...] = (), rev: str = REV, **seen: Any
) -> InstanceView:
    return InstanceView(
        reachable=True,
        in_recovery=False,
        revision=rev,
        pending_restart=pending,
        started_at=started,
        **seen,
    )


def state(
    *,
    a: InstanceView,
    b: InstanceView,
    pins: dict[Side, Pin] | None = None,
    image: str = OLD,
    primary: Side = "a",
    promotion: PromotionStatus | None = None,
    previous: ConfigurationStatus | None = None,
    stopped: frozenset[Side] = frozenset(),
    settings: dict[str, int] | None = None,
) -> RolloutInput:
    return RolloutInput(
        want_image=image,
        want_revision=REV,
        want_settings=settings or {},
        pins=pins if pins is not None else {"a": Pin(OLD), "b": Pin(OLD)},
        instances={"a": a, "b": b},
        primary=primary,
        stopped=stopped,
        promotion=promotion or PromotionStatus(),
        previous=previous or ConfigurationStatus(),
        now=NOW,
    )


def then(decision: RolloutDecision, inp: RolloutInput, **changes: Any) -> RolloutInput:
    """The next observation's input after ``decision`` was written."""
    pins: dict[Side, Pin] = {
        s: Pin(
            str(getattr(decision.configuration, s).image),
            getattr(decision.configuration, s).restart_revision,
        )
        for s in SIDES
    }
    changes.setdefault("now", inp.now + timedelta(seconds=10))
    return dataclasses.replace(inp, pins=pins, previous=decision.configuration, **changes)


def with_roll_at_switchover(decision: RolloutDecision) -> ConfigurationStatus:
    """The configuration ``decision`` recorded, with its roll moved on to the switchover step."""
    rollout = decision.configuration.rollout.model_copy(update={"step": RolloutStep.SWITCHOVER})
    return decision.configuration.model_copy(update={"rollout": rollout})


def test_nothing_pending_is_applied() -> None:
    decision = decide(state(a=serving(), b=streaming()))
    assert (decision.condition_status, decision.reason) == ("True", ConfigReason.APPLIED)
    assert decision.configuration.pending_restart == []
    assert not decision.pins_changed and decision.switchover is None


def test_an_instance_that_has_not_reloaded_yet_is_reloading() -> None:
    decision = decide(state(a=serving(), b=streaming(rev="r1")))
    assert (decision.condition_status, decision.reason) == ("False", ConfigReason.RELOADING)
    assert "side b" in decision.message


def test_a_restart_waits_for_a_streaming_standby() -> None:
    waiting = InstanceView(reachable=True, in_recovery=True, streaming=False, revision=REV)
    decision = decide(state(a=serving(pending=("max_connections",)), b=waiting))
    assert decision.reason == ConfigReason.RESTART_PENDING
    assert "the standby (side b) streams" in decision.message
    assert decision.configuration.pending_restart == ["max_connections"]
    assert not decision.pins_changed


def test_a_restart_only_parameter_rolls_standby_switchover_old_primary() -> None:
    pending = ("max_connections",)
    first = state(a=serving(pending=pending), b=streaming(pending=pending))
    started = decide(first)
    rollout = started.configuration.rollout
    assert rollout.step == RolloutStep.RESTARTING_STANDBY and rollout.result == "InProgress"
    token = str(rollout.token)
    # Only the standby is pinned to the roll; the primary's StatefulSet is untouched.
    assert started.pins_changed
    assert started.configuration.b is not None and started.configuration.b.restart_revision == token
    assert started.configuration.a is not None and started.configuration.a.restart_revision is None
    assert rollout.restarted_from == {"b": "t0"}
    assert [e[1] for e in started.events] == ["RollingRestartStarted", "RollingRestartInstance"]
    assert started.reason == ConfigReason.ROLLING_RESTART

    # The old standby pod still streams (not replaced yet): not done.
    same = decide(then(started, first))
    assert same.configuration.rollout.step == RolloutStep.RESTARTING_STANDBY
    assert same.switchover is None and not same.pins_changed

    # Restarted: another postmaster, nothing pending -> the switchover is asked for.
    restarted = then(
        started, first, instances={"a": serving(pending=pending), "b": streaming("t1")}
    )
    switching = decide(restarted)
    assert switching.configuration.rollout.step == RolloutStep.SWITCHOVER
    assert switching.switchover is not None
    assert (switching.switchover.token, switching.switchover.trigger) == (token, "Rollout")
    assert "RollingRestartSwitchover" in [e[1] for e in switching.events]

    # The promotion runs: wait; it succeeded: the old primary (now standby) restarts.
    running = PromotionStatus(
        token=token, result="InProgress", step="CatchingUp", from_side="a", to_side="b"
    )
    waiting = decide(then(switching, restarted, promotion=running))
    assert (
        waiting.switchover is None and waiting.configuration.rollout.step == RolloutStep.SWITCHOVER
    )
    done = running.model_copy(update={"result": "Succeeded", "step": "Done"})
    after = then(
        waiting,
        restarted,
        promotion=done,
        primary="b",
        instances={"a": streaming("t2", pending=pending), "b": serving("t1")},
    )
    old = decide(after)
    assert old.configuration.rollout.step == RolloutStep.RESTARTING_OLD_PRIMARY
    assert old.configuration.a is not None and old.configuration.a.restart_revision == token
    assert old.configuration.rollout.restarted_from == {"b": "t0", "a": "t2"}
    # Restarted and streaming: done.
    final = decide(then(old, after, instances={"a": streaming("t3"), "b": serving("t1")}))
    assert final.configuration.rollout.step == RolloutStep.DONE
    assert final.configuration.rollout.result == "Succeeded"
    assert (final.condition_status, final.reason) == ("True", ConfigReason.APPLIED)
    assert final.configuration.pending_restart == []


def test_a_rejoin_that_restarted_the_old_primary_needs_no_second_restart() -> None:
    token_roll = decide(
        state(a=serving(pending=("shared_buffers",)), b=streaming(pending=("shared_buffers",)))
    )
    token = str(token_roll.configuration.rollout.token)
    previous = with_roll_at_switchover(token_roll)
    done = PromotionStatus(token=token, result="Succeeded", step="Done", from_side="a", to_side="b")
    decision = decide(
        state(
            a=streaming("t9"),
            b=serving("t1"),
            pins={"a": Pin(OLD), "b": Pin(OLD, token)},
            primary="b",
            promotion=done,
            previous=previous,
        )
    )
    assert decision.configuration.rollout.result == "Succeeded"
    assert (
        decision.configuration.a is not None and decision.configuration.a.restart_revision is None
    )


def test_a_minor_image_change_pins_one_side_at_a_time() -> None:
    first = state(a=serving(), b=streaming(), image=NEW)
    started = decide(first)
    assert started.configuration.pending_restart == ["image"]
    assert started.configuration.rollout.reason == "Image"
    a, b = started.configuration.a, started.configuration.b
    assert a is not None and b is not None
    assert (a.image, b.image) == (OLD, NEW), "never both StatefulSets at once"


def test_a_major_image_change_is_refused_and_nothing_moves() -> None:
    decision = decide(state(a=serving(), b=streaming(), image="postgres:16.1"))
    assert (decision.condition_status, decision.reason) == (
        "False",
        ConfigReason.IMAGE_CHANGE_REFUSED,
    )
    assert (
        "spec.postgres.image changes the PostgreSQL major version from 15 to 16" in decision.message
    )
    assert not decision.pins_changed and decision.switchover is None
    assert decision.configuration.rollout.step is None


def test_a_failed_switchover_blocks_the_roll_until_the_spec_changes() -> None:
    pending = ("max_connections",)
    started = decide(state(a=serving(pending=pending), b=streaming(pending=pending)))
    token = str(started.configuration.rollout.token)
    at_switchover = with_roll_at_switchover(started)
    failed = PromotionStatus(
        token=token,
        result="Failed",
        reason="SwitchoverFailed",
        message="no catch-up",
        from_side="a",
        to_side="b",
    )
    inp = state(
        a=serving(pending=pending),
        b=streaming("t1"),
        pins={"a": Pin(OLD), "b": Pin(OLD, token)},
        promotion=failed,
        previous=at_switchover,
    )
    blocked = decide(inp)
    assert blocked.reason == ConfigReason.ROLLOUT_BLOCKED
    assert blocked.configuration.rollout.result == "Blocked"
    assert blocked.events[0][:2] == ("Warning", "RollingRestartBlocked")
    again = decide(then(blocked, inp, now=NOW + timedelta(minutes=5)))
    assert again.reason == ConfigReason.ROLLOUT_BLOCKED and again.switchover is None
    assert not again.pins_changed
    # A new target (another parameter change) rolls again.
    moved = dataclasses.replace(
        then(blocked, inp),
        want_revision="r3",
        instances={
            "a": serving(pending=pending, rev="r3"),
            "b": streaming("t1", pending=pending, rev="r3"),
        },
    )
    rolled = decide(moved)
    assert rolled.configuration.rollout.result == "InProgress"
    assert rolled.configuration.rollout.token != token


def test_a_manually_rejoined_old_primary_ends_the_roll() -> None:
    pending = ("max_connections",)
    started = decide(state(a=serving(pending=pending), b=streaming(pending=pending)))
    token = str(started.configuration.rollout.token)
    previous = with_roll_at_switchover(started)
    done = PromotionStatus(token=token, result="Succeeded", step="Done", from_side="a", to_side="b")
    decision = decide(
        state(
            a=InstanceView(reachable=False),
            b=serving("t1"),
            pins={"a": Pin(OLD), "b": Pin(OLD, token)},
            primary="b",
            promotion=done,
            previous=previous,
            stopped=frozenset({"a"}),
        )
    )
    assert decision.configuration.rollout.result == "Succeeded"
    assert "rejoin: Manual" in decision.message


def test_effective_pins_prefer_status_then_live_then_spec() -> None:
    recorded = ConfigurationStatus.model_validate({"a": {"image": OLD, "restartRevision": "x"}})
    pins = effective_pins(
        recorded, {"a": Pin("live:1"), "b": Pin("live:2")}, NEW, PromotionStatus()
    )
    assert pins == {"a": Pin(OLD, "x"), "b": Pin("live:2")}
    assert effective_pins(ConfigurationStatus(), {}, NEW, PromotionStatus()) == {
        "a": Pin(NEW),
        "b": Pin(NEW),
    }


def test_the_statefulset_is_built_from_its_pin(inputs: Callable[..., BuildInputs]) -> None:
    built = inputs({"postgres": {"image": NEW}})
    default = build_postgres_statefulset(built, "a")["spec"]["template"]
    assert default["spec"]["containers"][0]["image"] == NEW
    assert "annotations" not in default["metadata"], "unpinned: exactly what was built before"
    pinned = dataclasses.replace(built, pins={"a": Pin(OLD), "b": Pin(NEW, "rollout-1")})
    a = build_postgres_statefulset(pinned, "a")["spec"]["template"]
    b = build_postgres_statefulset(pinned, "b")["spec"]["template"]
    assert a["spec"]["containers"][0]["image"] == OLD and "annotations" not in a["metadata"]
    assert b["spec"]["containers"][0]["image"] == NEW
    assert b["metadata"]["annotations"] == {ANNOTATION_RESTART_REVISION: "rollout-1"}


def test_an_image_that_does_not_start_can_be_corrected_while_the_standby_is_down() -> None:
    first = state(a=serving(), b=streaming("t0"), image="postgres:15.99")
    started = decide(first)
    assert started.configuration.b is not None
    assert started.configuration.b.image == "postgres:15.99"
    # The new image never starts: the standby stays down, the roll waits, the primary is kept.
    down = then(started, first, instances={"a": serving(), "b": InstanceView(reachable=False)})
    stuck = decide(down)
    assert stuck.configuration.rollout.step == RolloutStep.RESTARTING_STANDBY
    assert stuck.configuration.a is not None and stuck.configuration.a.image == OLD
    # The user corrects the image: the down standby is pinned to it at once.
    fixed = decide(then(stuck, down, want_image=NEW))
    assert fixed.pins_changed
    assert fixed.configuration.b is not None and fixed.configuration.b.image == NEW
    assert fixed.configuration.rollout.restarted_from == {"b": "t0"}
    # It starts and streams: a postmaster other than the first proves the restart.
    back = then(fixed, down, want_image=NEW, instances={"a": serving(), "b": streaming("t5")})
    assert decide(back).configuration.rollout.step == RolloutStep.SWITCHOVER


def test_no_pin_moves_while_another_promotion_runs() -> None:
    first = state(a=serving(), b=InstanceView(reachable=False), image=NEW)
    previous = ConfigurationStatus.model_validate(
        {
            "rollout": {
                "step": "RestartingStandby",
                "result": "InProgress",
                "token": "rollout-1",
                "revision": REV,
                "image": NEW,
                "restartedFrom": {"b": "t0"},
            }
        }
    )
    user = PromotionStatus(token="by-hand", result="InProgress", step="Fencing", from_side="a")
    decision = decide(dataclasses.replace(first, previous=previous, promotion=user))
    assert not decision.pins_changed and decision.switchover is None
    assert "waiting for promotion 'by-hand'" in decision.message
    # Once it is over, the roll goes on (here: the down standby is re-pinned).
    decision = decide(dataclasses.replace(first, previous=previous))
    assert decision.pins_changed


def test_an_instance_that_does_not_answer_is_not_claimed_applied() -> None:
    decision = decide(state(a=serving(), b=InstanceView(reachable=False)))
    assert (decision.condition_status, decision.reason) == ("Unknown", ConfigReason.NOT_OBSERVED)
    assert "side b does not answer" in decision.message
    # A side meant to be stopped (rejoin: Manual) is not waited for.
    stopped = decide(
        state(a=serving(), b=InstanceView(reachable=False), stopped=frozenset[Side]({"b"}))
    )
    assert stopped.condition_status == "True"


# --- the old primary of the roll's own switchover restarts once ---------------------------------


def roll_at_switchover(token: str = "rollout-1", image: str = NEW) -> ConfigurationStatus:
    return ConfigurationStatus.model_validate(
        {
            "a": {"image": OLD},
            "b": {"image": image, "restartRevision": token},
            "rollout": {
                "step": "Switchover",
                "result": "InProgress",
                "token": token,
                "revision": REV,
                "image": image,
                "restartedFrom": {"b": "t0"},
            },
        }
    )


@pytest.mark.parametrize(
    ("token", "step", "result", "pinned"),
    [
        ("rollout-1", "CatchingUp", "InProgress", False),  # a still serves: never re-pinned
        ("rollout-1", "StoppingOldPrimary", "InProgress", False),  # may still be unfenced
        ("rollout-1", "Promoting", "InProgress", True),  # stopped for good until Rejoining
        ("rollout-1", "SwitchingRoles", "InProgress", True),
        ("rollout-1", "Rejoining", "InProgress", True),
        ("rollout-1", "Done", "Succeeded", True),
        ("by-hand", "Rejoining", "InProgress", False),  # someone else's promotion
    ],
)
def test_the_rolls_old_primary_rejoins_on_the_new_pin(
    token: str, step: str, result: str, pinned: bool
) -> None:
    promotion = PromotionStatus(
        token=token, result=result, step=step, type="Switchover", from_side="a", to_side="b"
    )
    pins = effective_pins(roll_at_switchover(), {}, NEW, promotion)
    assert pins["b"] == Pin(NEW, "rollout-1")
    assert pins["a"] == (Pin(NEW, "rollout-1") if pinned else Pin(OLD))


def test_an_image_roll_restarts_the_old_primary_once() -> None:
    """The old primary rejoined on the roll's pin (it was stopped by the switchover): the roll
    neither pins it again nor waits for another restart."""
    done = PromotionStatus(
        token="rollout-1", result="Succeeded", step="Done", from_side="a", to_side="b"
    )
    previous = roll_at_switchover()
    inp = state(
        a=streaming("t7"),
        b=serving("t1"),
        pins=effective_pins(previous, {}, NEW, done),
        image=NEW,
        primary="b",
        promotion=done,
        previous=previous,
    )
    decision = decide(inp)
    assert decision.configuration.rollout.result == "Succeeded", decision.message
    assert not decision.pins_changed
    assert "RollingRestartInstance" not in [e[1] for e in decision.events]
    a = decision.configuration.a
    assert a is not None and (a.image, a.restart_revision) == (NEW, "rollout-1")


def _statefulset_image(kube: MemoryKube, side: str) -> tuple[str, dict[str, str]]:
    sts = kube.objects[("StatefulSet", "build", f"ci-pg-{side}")]
    template = sts["spec"]["template"]
    return (
        template["spec"]["containers"][0]["image"],
        template["metadata"].get("annotations", {}),
    )


@pytest.mark.parametrize(
    ("token", "image", "annotations"),
    [
        # Someone else's promotion during a refused (major) image change: the pin, not the spec.
        ("by-hand", OLD, {}),
        # The roll's own switchover: the old primary is stopped and rejoins on the roll's pin.
        ("rollout-1", "postgres:15.6", {ANNOTATION_RESTART_REVISION: "rollout-1"}),
    ],
)
def test_a_promotion_step_writes_the_statefulset_with_its_pin(
    body: Callable[..., dict[str, Any]], token: str, image: str, annotations: dict[str, str]
) -> None:
    """A promotion step's apply builds the StatefulSets from the same pins as every other apply:
    writing the spec's image there restarted the old primary on it at ``Rejoining`` (then once
    more when the roll pinned it), and during a promotion under a refused image change it would
    start new binaries on old data."""
    spec_image = "postgres:15.6" if token.startswith("rollout") else "postgres:16.1"
    raw = body({"postgres": {"image": spec_image}})
    configuration = roll_at_switchover(image="postgres:15.6")
    if not token.startswith("rollout"):
        configuration = configuration.model_copy(update={"rollout": RolloutStatus()})
    raw["status"] = {
        "primary": "a",
        "standby": "b",
        "configuration": configuration.model_dump(by_alias=True, exclude_none=True),
        "promotion": {
            "token": token,
            "result": "InProgress",
            "step": "Rejoining",
            "type": "Switchover",
            "fromSide": "a",
            "toSide": "b",
        },
    }
    cluster = parse_cluster(raw)
    kube = MemoryKube()
    apply_step(
        kube,
        raw,
        cluster,
        Step.REJOINING,
        credentials=CREDENTIALS,
        operator_image="registry.example/gocd-ha-operator:test",
    )
    assert _statefulset_image(kube, "a") == (image, annotations)


def test_the_entrypoint_knows_the_same_hot_standby_settings() -> None:
    script = (Path(pgconfig.__file__).parent / "scripts" / CM_ENTRYPOINT).read_text()
    line = next(x for x in script.splitlines() if x.startswith("hot_standby_sensitive="))
    assert tuple(line.split("=", 1)[1].strip('"').split()) == HOT_STANDBY_SENSITIVE_SETTINGS


# --- lowering a hot-standby-sensitive setting: the primary first, in place ----------------------

MC = "max_connections"


def at(value: int) -> dict[str, Any]:
    """What an instance reports of max_connections: running ``value``, PostgreSQL default 100."""
    return {"settings": {MC: value}, "defaults": {MC: 100}}


def test_lowering_max_connections_restarts_the_primary_in_place_first() -> None:
    pending = (MC,)
    first = state(
        a=serving(pending=pending, **at(100)),
        b=streaming(pending=pending, **at(100)),
        settings={MC: 80},
    )
    started = decide(first)
    rollout = started.configuration.rollout
    token = str(rollout.token)
    assert rollout.step == RolloutStep.RESTARTING_PRIMARY, started.message
    a, b = started.configuration.a, started.configuration.b
    assert a is not None and a.restart_revision == token, "the primary is pinned"
    assert b is not None and b.restart_revision is None, "the standby is not (yet)"
    assert rollout.restarted_from == {"a": "t0"}
    assert [e[1] for e in started.events] == ["RollingRestartStarted", "RollingRestartInstance"]
    assert started.switchover is None
    assert "max_connections 100 -> 80" in started.events[0][2]

    # Not restarted yet: waits; restarted but not serving yet: waits.
    assert decide(then(started, first)).configuration.rollout.step == RolloutStep.RESTARTING_PRIMARY
    down = then(
        started, first, instances={"a": InstanceView(reachable=False), "b": first.instances["b"]}
    )
    waiting = decide(down)
    assert waiting.configuration.rollout.step == RolloutStep.RESTARTING_PRIMARY
    assert waiting.switchover is None and not waiting.pins_changed

    # Serving again from a new postmaster at 80 (its start wrote 80 into the WAL at 200): the
    # standby is restarted only once it streams again and has replayed that far — restarted
    # before, its control file would still require 100.
    reconnecting = then(
        started,
        first,
        instances={
            "a": serving("t1", lsn=200, **at(80)),
            "b": InstanceView(reachable=True, in_recovery=True, lsn=150, **at(100)),
        },
    )
    held = decide(reconnecting)
    assert held.configuration.rollout.step == RolloutStep.RESTARTING_PRIMARY, held.message
    assert held.configuration.rollout.replay_target_lsn == 200
    assert not held.pins_changed
    behind = then(
        held,
        reconnecting,
        instances={
            "a": serving("t1", lsn=260, **at(80)),
            "b": streaming(pending=pending, lsn=199, **at(100)),
        },
    )
    assert decide(behind).configuration.rollout.step == RolloutStep.RESTARTING_PRIMARY
    primary_done = then(
        held,
        reconnecting,
        instances={
            "a": serving("t1", lsn=300, **at(80)),
            "b": streaming(pending=pending, lsn=250, **at(100)),
        },
    )
    standby = decide(primary_done)
    assert standby.configuration.rollout.step == RolloutStep.RESTARTING_STANDBY
    assert standby.configuration.b is not None and standby.configuration.b.restart_revision == token
    assert "RollingRestartRestartingStandby" in [e[1] for e in standby.events]
    assert standby.switchover is None

    final = decide(
        then(
            standby,
            primary_done,
            instances={"a": serving("t1", **at(80)), "b": streaming("t2", **at(80))},
        )
    )
    assert final.configuration.rollout.result == "Succeeded", final.message
    assert final.switchover is None, "the primary already runs the new configuration"
    assert (final.condition_status, final.reason) == ("True", ConfigReason.APPLIED)


def test_a_parameter_left_to_its_default_is_lowered_to_the_default() -> None:
    """spec.postgres.parameters no longer sets max_connections (it was 150): the default (100)
    is lower."""
    pending = (MC,)
    decision = decide(
        state(a=serving(pending=pending, **at(150)), b=streaming(pending=pending, **at(150)))
    )
    assert decision.configuration.rollout.step == RolloutStep.RESTARTING_PRIMARY


def test_raising_max_connections_keeps_the_standby_first() -> None:
    pending = (MC,)
    decision = decide(
        state(
            a=serving(pending=pending, **at(100)),
            b=streaming(pending=pending, **at(100)),
            settings={MC: 150},
        )
    )
    assert decision.configuration.rollout.step == RolloutStep.RESTARTING_STANDBY


def standby_restarted_first() -> ConfigurationStatus:
    """A roll at ``RestartingStandby`` whose standby, b, got the restart revision first."""
    return ConfigurationStatus.model_validate(
        {
            "a": {"image": OLD},
            "b": {"image": OLD, "restartRevision": "rollout-1"},
            "rollout": {
                "step": "RestartingStandby",
                "result": "InProgress",
                "token": "rollout-1",
                "revision": REV,
                "image": OLD,
                "restartedFrom": {"b": "t0"},
            },
        }
    )


def test_a_standby_stuck_below_the_primary_from_an_older_operator_gets_out() -> None:
    """An older operator restarted the standby first with the lower value: PostgreSQL refused it
    and the roll waited at RestartingStandby. The primary is restarted in place; the standby then
    starts at the primary's recorded value (the entrypoint's floor, gocdha.raised_settings) and is
    restarted once more to the lower value."""
    previous = standby_restarted_first()
    stuck = state(
        a=serving(pending=(MC,), **at(100)),
        b=InstanceView(reachable=False),
        pins={"a": Pin(OLD), "b": Pin(OLD, "rollout-1")},
        previous=previous,
        settings={MC: 80},
    )
    out = decide(stuck)
    assert out.configuration.rollout.step == RolloutStep.RESTARTING_PRIMARY, out.message
    assert out.configuration.a is not None and out.configuration.a.restart_revision == "rollout-1"
    assert out.pins_changed
    # The primary runs 80; the standby came back at its floor, 100, says so, and has replayed
    # the primary's restart.
    raised = streaming("t5", raised=(MC,), lsn=300, **at(100))
    back = then(out, stuck, instances={"a": serving("t1", lsn=200, **at(80)), "b": raised})
    again = decide(back)
    assert again.configuration.rollout.step == RolloutStep.RESTARTING_STANDBY
    b = again.configuration.b
    assert b is not None and b.restart_revision not in (None, "rollout-1"), "replaced once more"
    assert again.pins_changed
    assert again.configuration.pending_restart == [MC]
    # Restarted at 80, nothing raised: done.
    final = decide(
        then(again, back, instances={"a": serving("t1", **at(80)), "b": streaming("t6", **at(80))})
    )
    assert final.configuration.rollout.result == "Succeeded", final.message
    assert (final.condition_status, final.reason) == ("True", ConfigReason.APPLIED)


def test_a_standby_running_raised_settings_is_not_claimed_applied() -> None:
    decision = decide(state(a=serving(**at(80)), b=streaming(raised=(MC,), **at(100))))
    assert decision.condition_status != "True"
    assert decision.configuration.pending_restart == [MC]
    b = decision.configuration.b
    assert b is not None and b.pending_restart == [MC]


def test_a_standby_back_at_its_floor_sends_the_roll_to_the_primary_first() -> None:
    """The rendered value cannot always be told from the spec: initdb may have written a lower
    max_connections than PostgreSQL's default into the data directory (little shared memory), so
    removing max_connections=80 from the spec lowers it to 50 while the rule expects 100. The
    standby, restarted first, comes back at its floor (80, the primary's): that is the evidence.
    The primary restarts first rather than the standby again and again."""
    previous = standby_restarted_first()
    inp = state(
        a=serving(pending=(MC,), **at(80)),
        b=streaming("t1", raised=(MC,), **at(80)),
        pins={"a": Pin(OLD), "b": Pin(OLD, "rollout-1")},
        previous=previous,
    )
    decision = decide(inp)
    assert decision.configuration.rollout.step == RolloutStep.RESTARTING_PRIMARY, decision.message
    b = decision.configuration.b
    assert b is not None and b.restart_revision == "rollout-1", "the standby is not restarted again"
    a = decision.configuration.a
    assert a is not None and a.restart_revision == "rollout-1"
