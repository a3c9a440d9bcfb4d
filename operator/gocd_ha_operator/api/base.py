"""What the spec and status models share: the wire conventions of the ``GoCDHACluster`` API.

Its own module because both :mod:`~gocd_ha_operator.api.spec` and
:mod:`~gocd_ha_operator.api.status` build on it, and the spec module (which holds the whole object)
imports the status module: a shared base below both keeps the imports one way.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

#: Warm: the standby GoCD server runs and syncs through business continuity; Cold: it is stopped.
StandbyMode = Literal["Warm", "Cold"]
#: What happens to the old primary's side after a promotion (spec, and recorded in status).
RejoinMode = Literal["Automatic", "Manual"]


class ApiModel(BaseModel):
    """camelCase on the wire, unknown fields refused, assignment validated."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=True,
    )

    def to_api(self) -> dict[str, Any]:
        """The object as the API shows it: camelCase, JSON types, unset fields omitted."""
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)
