"""Leader election of operator replicas on the Lease ``gocd-ha-operator`` (as controller-runtime).

Only the holder runs kopf (every handler and daemon); the others wait. The rules:

* a candidate takes the Lease when it is absent, empty, or has not changed for
  ``leaseDuration`` measured on the candidate's *own* monotonic clock since it first saw that
  record (no wall-clock comparison between machines), and always with a compare-and-swap;
* the holder renews every ``retryPeriod``; a renewal that succeeds extends its deadline to the
  renewal's start plus ``renewDeadline``;
* a holder that reaches its deadline **exits the process at once** (``on_lost``), without waiting
  for handlers to finish: with ``renewDeadline < leaseDuration`` it is gone before any other
  replica may take over. The Deployment restarts it as a candidate. Every promotion step is safe
  to repeat, so the new leader resumes whatever was in flight;
* the watchdog is a thread, so a process frozen past its deadline (SIGSTOP, a paused VM) resumes
  with the watchdog racing the threads that act. The operator's client therefore checks the
  deadline itself before every write (:meth:`LeaderElector.guard`), and the promotion runner before
  every step and step Event: past it, nothing more is sent and the process exits.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from gocd_ha_operator.kube.apply import KubeClient
from gocd_ha_operator.kube.lease import (
    LeaseConflictError,
    LeaseRecord,
    create_lease,
    get_lease,
    lease_object,
    write_lease,
)
from gocd_ha_operator.rules.lease import candidate_may_take

logger = logging.getLogger(__name__)

#: Exit status of a replica that lost its Lease (the Deployment restarts it).
EXIT_LOST_LEADERSHIP: Final = 3
WATCHDOG_TICK_SECONDS: Final = 0.05


class LeadershipLostError(RuntimeError):
    """This replica is past its renew deadline: it may not act (it is exiting)."""


def _exit_now() -> None:
    logging.shutdown()
    os._exit(EXIT_LOST_LEADERSHIP)


class LeaderElector:
    """One replica's view of the operator Lease."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float,
        renew_deadline: float,
        retry_period: float,
        on_lost: Callable[[], None] = _exit_now,
    ) -> None:
        if not 0 < retry_period < renew_deadline < lease_duration:
            raise ValueError("need 0 < retry period < renew deadline < lease duration")
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_lost = on_lost
        self.deadline = 0.0
        self.stop = threading.Event()
        self._observed: tuple[str | None, str | None] | None = None
        self._observed_at = 0.0

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this replica holds the Lease afterwards."""
        started = time.monotonic()
        now = datetime.now(UTC)
        duration = round(self.lease_duration)
        try:
            current = get_lease(self.kube, self.namespace, self.name)
            if current is None:
                create_lease(
                    self.kube,
                    lease_object(
                        self.name,
                        self.namespace,
                        holder=self.identity,
                        duration_seconds=duration,
                        now=now,
                    ),
                )
            elif current.holder == self.identity:
                write_lease(
                    self.kube, current, holder=self.identity, duration_seconds=duration, now=now
                )
            elif self._may_take(current, time.monotonic()):
                logger.info("taking the operator Lease from %s", current.holder or "nobody")
                write_lease(
                    self.kube, current, holder=self.identity, duration_seconds=duration, now=now
                )
            else:
                return False
        except LeaseConflictError:
            return False
        except Exception as exc:  # an unreachable API is a failed attempt, nothing more
            logger.warning("operator Lease %s/%s: %s", self.namespace, self.name, exc)
            return False
        self.deadline = max(self.deadline, started + self.renew_deadline)
        return True

    def holding(self) -> bool:
        """Whether this replica may act now: it holds the Lease and its deadline is ahead."""
        return not self.stop.is_set() and time.monotonic() < self.deadline

    def ensure_leading(self) -> None:
        """Before an action: past the renew deadline, give up at once (``on_lost``, i.e. exit)
        instead of acting on a leadership another replica may already have taken."""
        if self.holding():
            return
        if not self.stop.is_set():
            logger.critical(
                "past the renew deadline of the operator Lease %s/%s: not acting, exiting",
                self.namespace,
                self.name,
            )
            self.stop.set()
            self.on_lost()
        raise LeadershipLostError(
            f"not leading: past the renew deadline of the operator Lease {self.name}"
        )

    def guard(self, kube: KubeClient) -> KubeClient:
        """``kube`` (the client the handlers use) refusing every write unless this replica is
        leading; the elector's own client, which renews, is never guarded."""
        kube.before_write = self.ensure_leading
        return kube

    def _may_take(self, current: LeaseRecord, now: float) -> bool:
        key = (current.holder, current.resource_version)
        if key != self._observed:
            self._observed, self._observed_at = key, now
        duration = current.duration_seconds or self.lease_duration
        return candidate_may_take(
            holder=current.holder, observed_at=self._observed_at, duration=duration, now=now
        )

    def acquire(self) -> bool:
        """Block until this replica holds the Lease (True) or :attr:`stop` is set (False)."""
        logger.info(
            "waiting for the operator Lease %s/%s as %s", self.namespace, self.name, self.identity
        )
        while not self.stop.is_set():
            if self.try_acquire_or_renew():
                logger.info("holding the operator Lease %s/%s: leading", self.namespace, self.name)
                return True
            self.stop.wait(self.retry_period)
        return False

    def keep(self) -> None:
        """Renew in one thread, watch the deadline in another; ``on_lost`` at the deadline."""
        threading.Thread(target=self._renew_loop, name="leader-renew", daemon=True).start()
        threading.Thread(target=self._watchdog, name="leader-watchdog", daemon=True).start()

    def _renew_loop(self) -> None:
        while not self.stop.wait(self.retry_period):
            self.try_acquire_or_renew()

    def _watchdog(self) -> None:
        while not self.stop.is_set():
            if time.monotonic() >= self.deadline:
                logger.critical(
                    "lost the operator Lease %s/%s (no renewal within %ss): exiting",
                    self.namespace,
                    self.name,
                    self.renew_deadline,
                )
                self.stop.set()
                self.on_lost()
                return
            self.stop.wait(WATCHDOG_TICK_SECONDS)

    def release(self) -> None:
        """After kopf stopped cleanly: empty the holder so a waiting replica takes over at once."""
        self.stop.set()
        try:
            current = get_lease(self.kube, self.namespace, self.name)
            if current is not None and current.holder == self.identity:
                write_lease(
                    self.kube, current, holder="", duration_seconds=1, now=datetime.now(UTC)
                )
        except Exception as exc:  # best effort: the Lease expires anyway
            logger.warning("could not release the operator Lease: %s", exc)
