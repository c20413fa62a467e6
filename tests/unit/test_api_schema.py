"""The OpenAPI document states CONTRACT §7's forms: every timestamp RFC 3339 UTC with Z,
a platform row's organization_id null (schemathesis then checks responses against it)."""

from __future__ import annotations

import re
from typing import Any

from aggregators.query.api import UTC_Z, create_app
from voicemon.settings import Settings


def _schemas() -> dict[str, Any]:
    app = create_app(Settings(jwt_secret="s" * 40), store=None, redis=None)  # serves nothing
    return dict(app.openapi()["components"]["schemas"])


def test_every_timestamp_of_a_response_is_utc_with_z() -> None:
    stamps = {
        (name, prop): spec
        for name, schema in _schemas().items()
        for prop, spec in schema.get("properties", {}).items()
        if spec.get("format") == "date-time"
    }
    assert {("Realtime", "as_of"), ("History", "start"), ("SnapshotRow", "period_start"),
            ("StageRow", "computed_at")} <= set(stamps)  # fmt: skip
    for spec in stamps.values():
        assert spec["pattern"] == UTC_Z and "UTC" in spec["description"]
    assert re.fullmatch(UTC_Z, "2026-11-28T16:00:00Z")
    assert re.fullmatch(UTC_Z, "2026-11-28T16:00:00.125Z")
    assert not re.fullmatch(UTC_Z, "2026-11-28T16:00:00+00:00")
    assert not re.fullmatch(UTC_Z, "2026-11-28T16:00:00")


def test_platform_rows_have_a_null_organization_and_organizations_lead_with_who() -> None:
    schemas = _schemas()
    for name in ("SnapshotRow", "StageRow"):
        organization = schemas[name]["properties"]["organization_id"]
        assert {"type": "null"} in organization["anyOf"]
    assert list(schemas["OrganizationRow"]["properties"])[:2] == ["organization_id", "name"]
