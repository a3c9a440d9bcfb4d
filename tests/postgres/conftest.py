"""Fixtures for the real-Postgres tier (docs/architecture.md §14, tier 3)."""

from collections.abc import Iterator

import pytest

from tests.support.pg import PgCluster, pg_cluster, unavailable_reason


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    """An empty two-sided cluster (nothing started); every process is killed afterwards."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with pg_cluster() as created:
        yield created
