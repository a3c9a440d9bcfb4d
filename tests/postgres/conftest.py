"""Fixtures for the real-Postgres tier (docs/architecture.md §14, tier 3)."""

from collections.abc import Iterator

import pytest

from tests.support.pg import PgCluster, available_pg_cluster


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    """An empty two-sided cluster (nothing started); every process is killed afterwards."""
    with available_pg_cluster() as created:
        yield created
