"""Fields that cannot change once a GoCDHACluster exists, checked on an update.

The CRD carries the same rules as CEL (the API server enforces them when the webhook is off); the
admission webhook runs these so the refusal names the field in the same words as every other
validation message, and so the rules are tested in Python too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gocd_ha_operator.api.spec import GoCDHACluster, parse_cluster
from gocd_ha_operator.api.validation import Problem, SpecError
from gocd_ha_operator.api.versions import image_change_problem


def _get(body: Mapping[str, Any], *path: str) -> Any:
    current: Any = body
    for key in path:
        if not isinstance(current, Mapping):
            return None
        current = current.get(key)
    return current


def _views(body: Mapping[str, Any]) -> dict[str, Any]:
    """The immutable values of ``body``, defaults applied when it parses."""
    try:
        cluster: GoCDHACluster | None = parse_cluster(body)
    except SpecError:
        cluster = None
    if cluster is not None:
        spec = cluster.spec
        artifacts = spec.gocd.artifacts
        return {
            "database": spec.postgres.database,
            "postgres.image": spec.postgres.image,
            "postgres.storage": spec.postgres.storage.to_api(),
            "gocd.storage.class": spec.gocd.storage.storage_class_name,
            "shared.class": spec.shared_storage.storage_class_name,
            "shared.claim": spec.shared_storage.existing_claim,
            "artifacts.class": artifacts.storage_class_name if artifacts else None,
            "artifacts.claim": artifacts.existing_claim if artifacts else None,
        }
    return {
        "database": _get(body, "spec", "postgres", "database"),
        "postgres.image": _get(body, "spec", "postgres", "image"),
        "postgres.storage": _get(body, "spec", "postgres", "storage"),
        "gocd.storage.class": _get(body, "spec", "gocd", "storage", "storageClassName"),
        "shared.class": _get(body, "spec", "sharedStorage", "storageClassName"),
        "shared.claim": _get(body, "spec", "sharedStorage", "existingClaim"),
        "artifacts.class": _get(body, "spec", "gocd", "artifacts", "storageClassName"),
        "artifacts.claim": _get(body, "spec", "gocd", "artifacts", "existingClaim"),
    }


def _class_problem(path: str, old: Any, new: Any, new_claim: Any) -> Problem | None:
    if old is None or new == old or new_claim is not None:
        return None
    return Problem(
        path,
        f"is immutable: was {old!r} (a volume cannot move to another StorageClass; set "
        "existingClaim to use another volume)",
    )


def immutable_problems(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Problem]:
    """What an update from ``old`` to ``new`` changes that may not change."""
    before, after = _views(old), _views(new)
    problems: list[Problem] = []
    if before["database"] is not None and after["database"] != before["database"]:
        problems.append(
            Problem(
                "spec.postgres.database",
                f"is immutable: was {before['database']!r} (GoCD's data lives in it)",
            )
        )
    old_image, new_image = before["postgres.image"], after["postgres.image"]
    if isinstance(old_image, str) and isinstance(new_image, str):
        # Not immutable: a minor version is rolled one instance at a time (architecture.md §16).
        image_problem = image_change_problem(old_image, new_image)
        if image_problem is not None:
            problems.append(Problem("spec.postgres.image", image_problem))
    if (
        before["postgres.storage"] is not None
        and after["postgres.storage"] != before["postgres.storage"]
    ):
        problems.append(
            Problem(
                "spec.postgres.storage",
                "is immutable: a StatefulSet's volume claim template cannot change (resize the "
                "claims data-<name>-pg-a-0/-b-0 directly)",
            )
        )
    if before["gocd.storage.class"] is not None and (
        after["gocd.storage.class"] != before["gocd.storage.class"]
    ):
        problems.append(
            Problem(
                "spec.gocd.storage.storageClassName",
                f"is immutable: was {before['gocd.storage.class']!r}",
            )
        )
    for path, key in (
        ("spec.sharedStorage.storageClassName", "shared"),
        ("spec.gocd.artifacts.storageClassName", "artifacts"),
    ):
        if (
            key == "artifacts"
            and after["artifacts.class"] is None
            and (after["artifacts.claim"] is None)
        ):
            continue  # the artifacts volume was removed, which is allowed
        problem = _class_problem(
            path, before[f"{key}.class"], after[f"{key}.class"], after[f"{key}.claim"]
        )
        if problem is not None:
            problems.append(problem)
    return problems
