"""The test port registry (tests/support/ports.py): what keeps two workers off the same port."""

from __future__ import annotations

import socket
import time

from gocd_ha_operator.local import kubelet, process
from tests.support import ports


def test_a_claimed_port_is_not_handed_out_again_until_the_claim_expires() -> None:
    port = ports.free_port()
    now = time.time()
    assert not ports.claim(port, now=now), "another worker could be handed the same port"
    assert not ports.claim(port, now=now + ports.CLAIM_SECONDS - 60)
    assert ports.claim(port, now=now + ports.CLAIM_SECONDS + 1)


def test_free_ports_are_distinct_and_bindable() -> None:
    taken = [ports.free_port() for _ in range(50)]
    assert len(set(taken)) == len(taken)
    with socket.socket() as sock:
        sock.bind((ports.LOOPBACK, taken[-1]))


def test_the_local_kubelet_takes_its_ports_from_the_registry() -> None:
    # tests/conftest.py: the pods of every local stack in the suite use the registry too.
    assert process.free_port is ports.free_port
    assert vars(kubelet)["free_port"] is ports.free_port
