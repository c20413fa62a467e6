"""The organization directory (``voicemon.organizations``): names for the breakdown.

Fed by the compacted ``voice.organizations`` topic (a null value deletes) and by CSV
imports. Reads are one batched lookup, never one query per organization.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import orjson

from voicemon.event import ORGANIZATION_ID
from voicemon.store import Client

UNKNOWN = "Unknown"


class DirectoryError(ValueError):
    """A CSV or record that cannot go into the directory; the message says why."""


def upsert(client: Client, names: Mapping[str, str | None], at_ms: int | None = None) -> int:
    """Set names; a None name deletes the organization. One insert."""
    if not names:
        return 0
    at_ms = int(time.time() * 1000) if at_ms is None else at_ms
    rows = [[org, name or "", at_ms, int(name is None)] for org, name in names.items()]
    client.insert(
        "voicemon.organizations", rows,
        column_names=("organization_id", "name", "updated_at", "deleted"),
    )  # fmt: skip
    return len(rows)


def lookup(client: Client, organization_ids: Iterable[str]) -> dict[str, str]:
    """Names of the given organizations, in one query; missing ones read ``Unknown``."""
    wanted = sorted(set(organization_ids))
    if not wanted:
        return {}
    result = client.query(
        "SELECT organization_id, argMax(name, updated_at), argMax(deleted, updated_at) AS gone "
        "FROM voicemon.organizations WHERE organization_id IN {ids:Array(String)} "
        "GROUP BY organization_id HAVING gone = 0",
        parameters={"ids": wanted},
    )
    found = {org: name for org, name, _ in result.result_rows}
    return {org: found.get(org, UNKNOWN) for org in wanted}


def read_csv(path: Path, encoding: str = "utf-8") -> dict[str, str]:
    """``organization_id,name`` rows (a header line is allowed), in ``encoding``; a UTF-8
    byte-order mark (Excel's "CSV UTF-8") is dropped. A file that is not in ``encoding`` is a
    ``DirectoryError`` saying where and what to do."""
    try:
        text = path.read_bytes().decode("utf-8-sig" if encoding == "utf-8" else encoding)
    except UnicodeDecodeError as error:
        raise DirectoryError(
            f"{path} is not {encoding} text (byte 0x{error.object[error.start]:02x} at offset "
            f"{error.start}); save it as UTF-8 (Excel: 'CSV UTF-8') or pass --encoding, e.g. "
            "--encoding latin-1"
        ) from None
    except LookupError:
        raise DirectoryError(f"--encoding {encoding!r} is not an encoding Python knows") from None
    names: dict[str, str] = {}
    for number, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        if not row or (number == 1 and row[0].strip() == "organization_id"):
            continue
        if len(row) != 2 or not ORGANIZATION_ID.fullmatch(row[0].strip()) or not row[1].strip():
            raise DirectoryError(
                f"{path}:{number}: expected 'organization_id,name' with an id of 1-128 "
                "characters from [A-Za-z0-9_.:-]"
            )
        names[row[0].strip()] = row[1].strip()
    return names


def directory_value(organization_id: str, name: str) -> bytes:
    """The ``voice.organizations`` record value of a name (CONTRACT §2)."""
    return orjson.dumps({"organization_id": organization_id, "name": name})


def directory_record(key: bytes | None, value: bytes | None) -> tuple[str, str | None] | None:
    """(organization_id, name) of a ``voice.organizations`` record; name None for a
    tombstone (null value); None for a record that is not one."""
    if value is None:
        org = (key or b"").decode("utf-8", "replace")
        return (org, None) if ORGANIZATION_ID.fullmatch(org) else None
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    org_id, name = body.get("organization_id"), body.get("name")
    if not isinstance(org_id, str) or not ORGANIZATION_ID.fullmatch(org_id):
        return None
    return (org_id, name) if isinstance(name, str) and name else None
