"""Configuration changes reaching the instances: reloads and the controlled rolling restart.

The design is in docs/architecture.md §16. What these pure functions decide, from the spec, the
pins (what each Postgres StatefulSet runs), what each instance reports and the clock:

* **Reload.** The instance guard reloads a changed ``postgresql.conf`` by itself; here it is only
  checked: every running instance must report the revision the spec renders
  (``gocdha.config_revision``). Until then the condition ``ConfigurationApplied`` is ``False``
  with reason ``Reloading``.
* **Restart.** A side needs a restart when its StatefulSet runs another image than the spec's,
  or when its Postgres reports settings in ``pg_settings.pending_restart`` or
  ``gocdha.raised_settings`` (the entrypoint's hot-standby floor). Then, one step per
  observation, each recorded in ``status.configuration.rollout`` before it acts (so a restarted
  operator resumes it):

  0. ``RestartingPrimary`` — only when the primary runs a hot-standby-sensitive setting above
     the rendered value (:func:`lowered`): a standby cannot run below its primary's value, so
     the primary restarts first, in place (CloudNativePG's order), and the standby is restarted
     once it has replayed the primary's restart; no switchover follows.
  1. ``RestartingStandby`` — the standby's StatefulSet gets the new image and the roll's
     restart revision (a pod-template annotation): only that pod is replaced. Waits until it
     streams again with the new configuration loaded and nothing pending (nothing raised by the
     entrypoint's hot-standby floor either: such a standby is replaced once more).
  2. ``Switchover`` (when the primary needs the restart too) — a promotion with trigger
     ``Rollout`` through the RPO-0 protocol (docs/architecture.md §9). Once the promotion is past
     its point of no return (the old primary is stopped until ``Rejoining``), its StatefulSet is
     built with the new image and revision (:func:`rejoin_pin`), so it rejoins on them without a
     second restart.
  3. ``RestartingOldPrimary`` — waits until the old primary streams as the standby, restarted
     (again, only when it still needs it).
  4. ``Done``.

* **Image.** A change is rolled only within one major version and image variant
  (:func:`gocd_ha_operator.api.versions.image_change_problem`); anything else is refused with
  reason ``ImageChangeRefused`` and nothing moves.

Nothing here does I/O or reads a clock: ``now`` is an argument.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Final

from gocd_ha_operator.api import conditions as cond
from gocd_ha_operator.api.constants import SIDES, Side, other_side
from gocd_ha_operator.api.status import (
    ConditionStatus,
    ConfigurationStatus,
    InstanceConfigurationStatus,
    PromotionStatus,
    RolloutStatus,
)
from gocd_ha_operator.api.versions import image_change_problem
from gocd_ha_operator.rules.promotion import PromotionRequest, past_point_of_no_return

CONFIGURATION_APPLIED: Final = "ConfigurationApplied"
#: What ``pendingRestart`` lists for a side whose StatefulSet runs another image than the spec's.
IMAGE_PENDING: Final = "image"


class RolloutStep(StrEnum):
    """``status.configuration.rollout.step``, in order."""

    #: Only when a hot-standby-sensitive setting is lowered: the primary restarts in place first.
    RESTARTING_PRIMARY = "RestartingPrimary"
    RESTARTING_STANDBY = "RestartingStandby"
    SWITCHOVER = "Switchover"
    RESTARTING_OLD_PRIMARY = "RestartingOldPrimary"
    DONE = "Done"


class ConfigReason(StrEnum):
    """Reasons of the ``ConfigurationApplied`` condition."""

    APPLIED = "Applied"
    RELOADING = "Reloading"
    RESTART_PENDING = "RestartPending"
    ROLLING_RESTART = "RollingRestart"
    ROLLOUT_BLOCKED = "RolloutBlocked"
    IMAGE_CHANGE_REFUSED = "ImageChangeRefused"
    NOT_OBSERVED = "NotObserved"


@dataclass(frozen=True)
class Pin:
    """What one side's StatefulSet is built with: its image and the restart revision annotation
    (``None``: none, as before any rolling restart)."""

    image: str
    restart_revision: str | None = None


@dataclass(frozen=True)
class InstanceView:
    """What one instance reported at the last observation (``reachable=False``: nothing)."""

    reachable: bool
    in_recovery: bool | None = None
    streaming: bool = False
    revision: str | None = None
    pending_restart: tuple[str, ...] = ()
    server_version: str | None = None
    #: ``pg_postmaster_start_time()`` as the server wrote it: a changed value proves a restart.
    started_at: str | None = None
    #: The hot-standby-sensitive settings it runs (``pg_settings.setting``) and their PostgreSQL
    #: defaults (``boot_val``), by name.
    settings: Mapping[str, int] = field(default_factory=dict)
    defaults: Mapping[str, int] = field(default_factory=dict)
    #: Settings its entrypoint started above their configured value because its control file
    #: requires the primary's (``gocdha.raised_settings``): it needs another restart.
    raised: tuple[str, ...] = ()
    #: WAL position: a primary's current one, a standby's last replayed one.
    lsn: int | None = None


@dataclass(frozen=True)
class RolloutInput:
    want_image: str
    want_revision: str
    #: What each side's StatefulSet runs now (status pins, else the live objects); a side
    #: missing here has no StatefulSet yet.
    pins: Mapping[Side, Pin]
    instances: Mapping[Side, InstanceView]
    primary: Side
    #: Sides whose Postgres is meant to be stopped (a promotion in progress, ``rejoin: Manual``).
    stopped: frozenset[Side]
    promotion: PromotionStatus
    previous: ConfigurationStatus
    now: datetime
    #: The hot-standby-sensitive settings ``spec.postgres.parameters`` sets, as integers.
    want_settings: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RolloutDecision:
    configuration: ConfigurationStatus
    condition_status: ConditionStatus
    reason: ConfigReason
    message: str
    #: Events to post: (type, reason, message).
    events: list[tuple[str, str, str]] = field(default_factory=list)
    #: The switchover to start now (through the promotion protocol), if any.
    switchover: PromotionRequest | None = None
    #: Whether a pin changed: the children must be applied.
    pins_changed: bool = False


def status_pins(configuration: ConfigurationStatus) -> dict[Side, Pin]:
    """The pins recorded in status (sides without a recorded image are left out)."""
    pins: dict[Side, Pin] = {}
    for side in SIDES:
        entry = getattr(configuration, side)
        if entry is not None and entry.image:
            pins[side] = Pin(entry.image, entry.restart_revision)
    return pins


def rejoin_pin(
    configuration: ConfigurationStatus, promotion: PromotionStatus
) -> tuple[Side, Pin] | None:
    """The pin of the old primary of a roll's own switchover, once that switchover is past its
    point of no return: the old primary is stopped then and stays stopped until ``Rejoining``, so
    it rejoins on the roll's image and restart revision — one restart, not a rejoin on the old
    pin followed by a second restart at ``RestartingOldPrimary``. Derived from status alone, so
    that every apply (the runner's ``Rejoining``, a reconcile, a restarted operator) builds the
    same StatefulSet; the roll records it in ``status.configuration`` at its next step."""
    rollout = configuration.rollout
    if (
        rollout.result != "InProgress"
        or rollout.step != RolloutStep.SWITCHOVER
        or rollout.token is None
        or rollout.image is None
        or promotion.token != rollout.token
        or promotion.from_side is None
    ):
        return None
    if promotion.result == "Succeeded" or (
        promotion.result == "InProgress" and past_point_of_no_return(promotion.step)
    ):
        return promotion.from_side, Pin(rollout.image, rollout.token)
    return None


def effective_pins(
    configuration: ConfigurationStatus,
    live: Mapping[Side, Pin],
    spec_image: str,
    promotion: PromotionStatus,
) -> dict[Side, Pin]:
    """What each StatefulSet is to be built with: the recorded pin, else what the live
    StatefulSet runs, else (a StatefulSet not created yet) the spec's image; the old primary of
    the roll's own switchover past its point of no return gets the roll's pin
    (:func:`rejoin_pin`). So a spec edit never reaches a StatefulSet's image directly: only a
    rolling restart moves a pin."""
    recorded = status_pins(configuration)
    pins = {side: recorded.get(side) or live.get(side) or Pin(spec_image) for side in SIDES}
    rejoining = rejoin_pin(configuration, promotion)
    if rejoining is not None:
        side, pin = rejoining
        pins[side] = pin
    return pins


def restart_needs(inp: RolloutInput, side: Side) -> list[str]:
    """Why ``side`` needs a restart: ``image`` and/or the parameters pending on it."""
    needs: list[str] = []
    pin = inp.pins.get(side)
    if pin is not None and pin.image != inp.want_image:
        needs.append(IMAGE_PENDING)
    view = inp.instances.get(side)
    if view is not None and view.reachable:
        needs += [name for name in (*view.pending_restart, *view.raised) if name not in needs]
    return needs


def lowered(inp: RolloutInput, side: Side) -> list[str]:
    """The hot-standby-sensitive settings ``side`` runs above the value it is to run: the spec's,
    or, for one the spec leaves out and Postgres lists in ``pending_restart``, the PostgreSQL
    default. A standby restarted below its primary's value cannot run as a hot standby, so while
    the primary reports one of these it is restarted first, in place (docs/architecture.md §16)."""
    view = inp.instances.get(side)
    if view is None or not view.reachable:
        return []
    names = []
    for name, running in sorted(view.settings.items()):
        if name in inp.want_settings:
            target: int | None = inp.want_settings[name]
        elif name in view.pending_restart:
            target = view.defaults.get(name)
        else:
            continue
        if target is not None and target < running:
            names.append(f"{name} {running} -> {target}")
    # The rendered value is not always known (initdb may have written a lower one than
    # PostgreSQL's default into the data directory): a peer that its entrypoint started at its
    # floor while this side still runs at least that value is the evidence that this side must
    # go first — else that peer would come back at its floor after every restart.
    peer = inp.instances.get(other_side(side))
    if peer is not None and peer.reachable and peer.in_recovery:
        for name in peer.raised:
            current, floor = view.settings.get(name), peer.settings.get(name)
            if (
                current is not None
                and floor is not None
                and current >= floor
                and not any(entry.startswith(f"{name} ") for entry in names)
            ):
                names.append(f"{name} {current} (side {other_side(side)} runs it at its floor)")
    return names


def _of_roll(pin: Pin | None, token: str, image: str) -> bool:
    """Whether ``pin`` is one this roll gave (its token, or a later revision of it)."""
    revision = pin.restart_revision if pin is not None else None
    return (
        pin is not None
        and pin.image == image
        and revision is not None
        and (revision == token or revision.startswith(f"{token}."))
    )


def _next_revision(pin: Pin, token: str) -> str:
    """The restart revision that replaces a pod this roll restarted once already."""
    revision = pin.restart_revision or token
    count = revision[len(token) + 1 :] if revision.startswith(f"{token}.") else "1"
    return f"{token}.{int(count) + 1 if count.isdigit() else 2}"


def _settled(
    inp: RolloutInput, side: Side, restarted_from: str | None, *, primary: bool = False
) -> bool:
    """``side`` streams as a standby (``primary``: accepts writes) on the wanted image with the
    wanted configuration loaded and nothing pending — and, when this roll restarted it, from a
    postmaster that started after the one seen when it was pinned (``restarted_from``)."""
    view = inp.instances.get(side)
    pin = inp.pins.get(side)
    role_ok = (
        view is not None and view.in_recovery is False
        if primary
        else view is not None and bool(view.in_recovery) and view.streaming
    )
    return bool(
        view is not None
        and view.reachable
        and role_ok
        and view.revision == inp.want_revision
        and not view.pending_restart
        and not view.raised
        and pin is not None
        and pin.image == inp.want_image
        and (restarted_from is None or view.started_at != restarted_from)
    )


def _instance_status(
    inp: RolloutInput, side: Side, pins: Mapping[Side, Pin]
) -> InstanceConfigurationStatus | None:
    pin = pins.get(side)
    view = inp.instances.get(side)
    previous = getattr(inp.previous, side)
    if pin is None and view is None and previous is None:
        return None
    if view is not None and view.reachable:
        loaded, version = view.revision, view.server_version
        pending = list(dict.fromkeys((*view.pending_restart, *view.raised)))
    elif previous is not None:  # what an unreachable instance last said is the best knowledge
        loaded, pending = previous.loaded_revision, list(previous.pending_restart)
        version = previous.server_version
    else:
        loaded, pending, version = None, [], None
    return InstanceConfigurationStatus(
        image=pin.image if pin is not None else None,
        restart_revision=pin.restart_revision if pin is not None else None,
        loaded_revision=loaded,
        pending_restart=pending,
        server_version=version,
    )


def _configuration(
    inp: RolloutInput, pins: Mapping[Side, Pin], rollout: RolloutStatus
) -> ConfigurationStatus:
    pinned = replace(inp, pins=pins)
    pending: list[str] = []
    for side in SIDES:
        pending += [name for name in restart_needs(pinned, side) if name not in pending]
    return ConfigurationStatus(
        revision=inp.want_revision,
        image=inp.want_image,
        pending_restart=sorted(pending),
        a=_instance_status(inp, "a", pins),
        b=_instance_status(inp, "b", pins),
        rollout=rollout,
    )


def rollout_token(now: datetime) -> str:
    """The token of a roll started at ``now``: its switchover's promotion token and the restart
    revision of the pods it replaces (unique per roll, so rolling back and forth restarts)."""
    return "rollout-" + now.strftime("%Y%m%dt%H%M%Sz")


def _needs_summary(needs: Mapping[Side, list[str]]) -> str:
    return "; ".join(f"side {side}: {', '.join(names)}" for side, names in needs.items() if names)


class _Roll:
    """One decision in the making: the pins and the rollout record as they change."""

    def __init__(self, inp: RolloutInput) -> None:
        self.inp = inp
        self.pins: dict[Side, Pin] = dict(inp.pins)
        self.rollout = inp.previous.rollout
        self.events: list[tuple[str, str, str]] = []

    def decision(
        self,
        status: ConditionStatus,
        reason: ConfigReason,
        message: str,
        switchover: PromotionRequest | None = None,
    ) -> RolloutDecision:
        return RolloutDecision(
            configuration=_configuration(self.inp, self.pins, self.rollout),
            condition_status=status,
            reason=reason,
            message=message,
            events=self.events,
            switchover=switchover,
            pins_changed=self.pins != dict(self.inp.pins),
        )

    def rolling(self, message: str, switchover: PromotionRequest | None = None) -> RolloutDecision:
        step = self.rollout.step
        return self.decision(
            "False", ConfigReason.ROLLING_RESTART, f"{step}: {message}", switchover
        )

    def step_to(self, step: RolloutStep, message: str) -> None:
        self.rollout = self.rollout.model_copy(update={"step": step, "message": message})
        self.events.append(("Normal", f"RollingRestart{step}", message))

    def restart(self, side: Side, *, primary: bool = False) -> bool:
        """Restart ``side`` when it needs it (once, under this roll's token); whether it is
        settled (``primary``: as the primary, restarted in place). A side is pinned only while it
        answers, so that its start time is known. A standby this roll restarted that came back
        with settings raised to its primary's (the entrypoint's floor) is restarted once more
        when the primary no longer runs a higher value."""
        inp, token = self.inp, str(self.rollout.token)
        wanted = Pin(inp.want_image, token)
        view = inp.instances.get(side)
        pin = self.pins.get(side)
        if (
            _of_roll(pin, token, inp.want_image)
            and pin is not None
            and not primary
            and view is not None
            and view.reachable
            and view.raised
            and view.in_recovery
            and view.streaming
            and view.started_at is not None
            and view.started_at != self.rollout.restarted_from.get(side)
            and not lowered(inp, other_side(side))
        ):
            again = Pin(inp.want_image, _next_revision(pin, token))
            self.pins[side] = again
            starts = {**self.rollout.restarted_from, side: view.started_at}
            self.rollout = self.rollout.model_copy(update={"restarted_from": starts})
            self.events.append(
                (
                    "Normal",
                    "RollingRestartInstance",
                    f"restarting side {side} again ({again.restart_revision}): it started with "
                    f"{', '.join(view.raised)} at its primary's former value",
                )
            )
        elif not _of_roll(pin, token, inp.want_image) and restart_needs(
            replace(inp, pins=self.pins), side
        ):
            if view is not None and view.reachable and view.started_at is not None:
                start = view.started_at
            elif side in self.rollout.restarted_from:
                # Pinned earlier in this roll and down since (e.g. an image that does not
                # start, then corrected in the spec): the start recorded then still predates
                # both pins, so it still proves the next restart.
                start = self.rollout.restarted_from[side]
            else:
                return False
            self.pins[side] = wanted
            starts = {**self.rollout.restarted_from, side: start}
            self.rollout = self.rollout.model_copy(update={"restarted_from": starts})
            self.events.append(
                ("Normal", "RollingRestartInstance", f"restarting side {side} ({token})")
            )
        restarted_from = (
            self.rollout.restarted_from.get(side)
            if _of_roll(self.pins.get(side), token, inp.want_image)
            else None
        )
        return _settled(replace(inp, pins=self.pins), side, restarted_from, primary=primary)

    def finish(self, note: str = "") -> RolloutDecision:
        inp = self.inp
        message = (
            f"rolling restart {self.rollout.token} done: {inp.want_image}, configuration "
            f"revision {inp.want_revision}{note}"
        )
        self.rollout = self.rollout.model_copy(
            update={
                "step": RolloutStep.DONE,
                "result": "Succeeded",
                "finished_at": cond.rfc3339(inp.now),
                "message": message,
            }
        )
        self.events.append(("Normal", "RollingRestartSucceeded", message))
        return self.decision("True", ConfigReason.APPLIED, message)


def decide(inp: RolloutInput) -> RolloutDecision:
    """The next state of ``status.configuration`` and what to do about it."""
    roll = _Roll(inp)
    refusals = [
        problem
        for side in SIDES
        if side in inp.pins
        and (problem := image_change_problem(inp.pins[side].image, inp.want_image)) is not None
    ]
    if refusals:
        return roll.decision(
            "False",
            ConfigReason.IMAGE_CHANGE_REFUSED,
            f"spec.postgres.image {refusals[0]}; nothing is rolled",
        )
    primary, standby = inp.primary, other_side(inp.primary)
    target = (inp.want_revision, inp.want_image)
    previous = inp.previous.rollout
    if previous.result != "InProgress":
        needs = {side: restart_needs(inp, side) for side in SIDES}
        if not any(needs.values()):
            stale = [
                side
                for side in SIDES
                if side not in inp.stopped
                and (view := inp.instances.get(side)) is not None
                and view.reachable
                and view.revision != inp.want_revision
            ]
            silent = [
                side
                for side in SIDES
                if side not in inp.stopped
                and ((view := inp.instances.get(side)) is None or not view.reachable)
            ]
            if silent and not stale:
                # Never claim what nobody confirmed: an instance that does not answer may run
                # anything.
                return roll.decision(
                    "Unknown",
                    ConfigReason.NOT_OBSERVED,
                    f"side {' and '.join(silent)} does not answer: what it has loaded is unknown",
                )
            if stale:
                return roll.decision(
                    "False",
                    ConfigReason.RELOADING,
                    f"waiting for side {' and '.join(stale)} to load configuration revision "
                    f"{inp.want_revision} (the instance guard reloads Postgres)",
                )
            return roll.decision(
                "True",
                ConfigReason.APPLIED,
                f"{inp.want_image}, configuration revision {inp.want_revision} on every "
                "running instance",
            )
        pending = _needs_summary(needs)
        if previous.result == "Blocked" and (previous.revision, previous.image) == target:
            return roll.decision(
                "False",
                ConfigReason.ROLLOUT_BLOCKED,
                f"{previous.message} (pending: {pending}; change spec.postgres to roll again)",
            )
        waiting = _not_ready_to_roll(inp)
        if waiting is not None:
            return roll.decision(
                "False",
                ConfigReason.RESTART_PENDING,
                f"a restart is pending ({pending}); the rolling restart starts when {waiting}",
            )
        token = rollout_token(inp.now)
        kinds = {
            "Image" if name == IMAGE_PENDING else "Parameters" for v in needs.values() for name in v
        }
        down = lowered(inp, primary)
        first = RolloutStep.RESTARTING_PRIMARY if down else RolloutStep.RESTARTING_STANDBY
        order = (
            f"; lowered on the primary ({', '.join(down)}): it restarts first, in place"
            if down
            else ""
        )
        roll.rollout = RolloutStatus(
            step=first,
            result="InProgress",
            revision=inp.want_revision,
            image=inp.want_image,
            reason="And".join(sorted(kinds)),
            token=token,
            started_at=cond.rfc3339(inp.now),
            message=f"pending: {pending}{order}",
        )
        roll.events.append(
            ("Normal", "RollingRestartStarted", f"{token}: pending {pending}{order}")
        )
    elif (previous.revision, previous.image) != target:
        # The spec changed during the roll: the sides still to restart get the newest target.
        roll.rollout = previous.model_copy(
            update={"revision": inp.want_revision, "image": inp.want_image}
        )
    token = str(roll.rollout.token)
    promotion = inp.promotion
    if promotion.result == "InProgress" and promotion.token != token:
        # Someone else's promotion (an annotation, an automatic failover): no pin moves under
        # it; the roll goes on from its step once it is over, with the roles it left.
        return roll.rolling(f"waiting for promotion {promotion.token!r} to finish")

    down = lowered(inp, primary)
    if (
        down
        and roll.rollout.step in (RolloutStep.RESTARTING_STANDBY, RolloutStep.SWITCHOVER)
        and (roll.rollout.step != RolloutStep.SWITCHOVER or promotion.token != token)
    ):
        # A standby restarted below its primary's value cannot run as a hot standby: the
        # primary goes first (also the way out for a standby an older operator restarted first).
        roll.step_to(
            RolloutStep.RESTARTING_PRIMARY,
            f"lowered on the primary (side {primary}: {', '.join(down)}): restarting it in "
            "place first; a standby cannot run below its primary's value",
        )

    if roll.rollout.step == RolloutStep.RESTARTING_PRIMARY:
        if not roll.restart(primary, primary=True):
            return roll.rolling(
                f"waiting until the primary (side {primary}), restarted in place, accepts writes "
                f"again with configuration revision {inp.want_revision} on {inp.want_image}"
            )
        # Its start wrote the lowered values into the WAL: the standby restarts only once it has
        # replayed that (its control file then allows them), not at the floor of the old ones.
        replay_target = roll.rollout.replay_target_lsn
        if replay_target is None:
            view = inp.instances[primary]
            if view.lsn is None:
                return roll.rolling(f"waiting for the WAL position of side {primary}")
            replay_target = view.lsn
            roll.rollout = roll.rollout.model_copy(update={"replay_target_lsn": replay_target})
        seen = inp.instances.get(standby)
        if (
            seen is None
            or not seen.reachable
            or not seen.streaming
            or seen.lsn is None
            or seen.lsn < replay_target
        ):
            return roll.rolling(
                f"side {primary} accepts writes again with the new configuration; waiting until "
                f"the standby (side {standby}) streams and has replayed its restart"
            )
        roll.step_to(
            RolloutStep.RESTARTING_STANDBY,
            f"side {primary} accepts writes again with the new configuration and the standby "
            f"has replayed its restart; restarting the standby (side {standby})",
        )

    if roll.rollout.step == RolloutStep.RESTARTING_STANDBY:
        if not roll.restart(standby):
            return roll.rolling(
                f"waiting until the standby (side {standby}) streams again with configuration "
                f"revision {inp.want_revision} on {inp.want_image}"
            )
        if not restart_needs(replace(inp, pins=roll.pins), primary):
            return roll.finish()
        roll.step_to(
            RolloutStep.SWITCHOVER,
            f"side {standby} streams with the new configuration; switching over to it ({token})",
        )

    if roll.rollout.step == RolloutStep.SWITCHOVER:
        promotion = inp.promotion
        if promotion.token != token:
            waiting = _not_ready_to_roll(inp)
            if waiting is not None:
                return roll.rolling(f"the switchover waits until {waiting}")
            request = PromotionRequest(token=token, force=False, trigger="Rollout", annotation=None)
            return roll.rolling(f"switching over from side {primary} to side {standby}", request)
        if promotion.result == "InProgress":
            return roll.rolling(f"switchover {token} at step {promotion.step}")
        old = promotion.from_side or standby
        if promotion.result != "Succeeded":
            message = (
                f"the switchover of rolling restart {token} did not succeed "
                f"({promotion.reason}: {promotion.message}); side {old} keeps running the old "
                "configuration as the primary"
            )
            roll.rollout = roll.rollout.model_copy(
                update={
                    "result": "Blocked",
                    "finished_at": cond.rfc3339(inp.now),
                    "message": message,
                }
            )
            roll.events.append(("Warning", "RollingRestartBlocked", message))
            return roll.decision("False", ConfigReason.ROLLOUT_BLOCKED, message)
        roll.step_to(
            RolloutStep.RESTARTING_OLD_PRIMARY,
            f"side {promotion.to_side} is the primary; restarting side {old} (the old primary) "
            "where it still needs it",
        )

    if roll.rollout.step == RolloutStep.RESTARTING_OLD_PRIMARY:
        old = inp.promotion.from_side or standby
        if old in inp.stopped:
            return roll.finish(
                f"; side {old} stays stopped (rejoin: Manual) and restarts on the new "
                "configuration when it rejoins"
            )
        if not roll.restart(old):
            return roll.rolling(
                f"waiting until side {old} (the old primary) streams again with configuration "
                f"revision {inp.want_revision} on {inp.want_image}"
            )
        return roll.finish()

    # A step this operator does not know (a newer operator's): nothing to act on.
    return roll.rolling("not a step this operator knows; nothing is done")


def _not_ready_to_roll(inp: RolloutInput) -> str | None:
    """What a rolling restart (or its switchover) waits for, or ``None`` when it may go on: no
    promotion runs, the primary serves, the standby streams, both loaded the configuration."""
    if inp.promotion.result == "InProgress":
        return f"promotion {inp.promotion.token!r} has finished"
    primary, standby = inp.primary, other_side(inp.primary)
    p, s = inp.instances.get(primary), inp.instances.get(standby)
    if p is None or not p.reachable or p.in_recovery:
        return f"the primary (side {primary}) accepts writes"
    if s is None or not s.reachable or not s.in_recovery or not s.streaming:
        return f"the standby (side {standby}) streams"
    for side, view in ((primary, p), (standby, s)):
        if view.revision != inp.want_revision:
            return f"side {side} has loaded configuration revision {inp.want_revision}"
    return None
