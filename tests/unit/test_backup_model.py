"""``spec.backup`` and ``spec.bootstrap.recovery``: accepted shapes and errors naming the field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gocd_ha_operator.api.spec import parse_cluster
from gocd_ha_operator.api.validation import SpecError

Body = Callable[..., dict[str, Any]]


def test_backups_are_off_when_absent_and_parsed_when_present(body: Body) -> None:
    assert parse_cluster(body()).spec.backup is None
    spec = parse_cluster(
        body(
            {
                "backup": {
                    "schedule": "0 2 * * *",
                    "retention": {"count": 7, "maxAgeDays": 30},
                    "volume": {"size": "50Gi", "storageClassName": "standard"},
                },
                "bootstrap": {
                    "recovery": {"backupClaim": "old-backups", "targetTime": "2026-12-01T10:00:00Z"}
                },
            }
        )
    ).spec
    assert spec.backup is not None and spec.backup.retention.count == 7
    assert spec.bootstrap is not None and spec.bootstrap.recovery is not None
    assert spec.bootstrap.recovery.backup == "latest"


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        (
            {"backup": {"schedule": "0 2 * *", "volume": {"existingClaim": "b"}}},
            "spec.backup.schedule",
            "has 4 fields",
        ),
        (
            {"backup": {"schedule": "0 25 * * *", "volume": {"existingClaim": "b"}}},
            "spec.backup.schedule",
            "hour '25' is outside 0-23",
        ),
        ({"backup": {"schedule": "@daily"}}, "spec.backup.volume", "required field is missing"),
        (
            {"backup": {"volume": {"existingClaim": "b", "size": "1Gi"}}},
            "spec.backup.volume",
            "set either existingClaim, or size",
        ),
        (
            {"backup": {"volume": {"existingClaim": "b", "storageClassName": "x"}}},
            "spec.backup.volume",
            "storageClassName applies only",
        ),
        (
            {"backup": {"volume": {"size": "1Gi"}, "retention": {"count": 0}}},
            "spec.backup.retention.count",
            "greater than or equal to 1",
        ),
        (
            {"bootstrap": {"recovery": {"backupClaim": "b", "targetTime": "yesterday"}}},
            "spec.bootstrap.recovery.targetTime",
            "is not an RFC 3339 time",
        ),
        (
            {"bootstrap": {"recovery": {"backupClaim": "b", "backup": "../x"}}},
            "spec.bootstrap.recovery.backup",
            "is not a backup name",
        ),
        ({"bootstrap": {"recovery": {}}}, "spec.bootstrap.recovery.backupClaim", "required"),
    ],
)
def test_bad_backup_input_names_the_field(
    body: Body, spec: dict[str, Any], path: str, message: str
) -> None:
    with pytest.raises(SpecError) as excinfo:
        parse_cluster(body(spec))
    text = str(excinfo.value)
    assert path in text and message in text, text
