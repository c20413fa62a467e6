"""Pure parts of the Redis layout: every script call's keys on one Cluster slot, counter
increments per scope and partition, the Redis settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError
from redis.cluster import key_slot

from consumers.rolling_counters import (
    APPLIED_TTL_MS,
    DecidedMark,
    Span,
    by_tag,
    scope_increments,
)
from consumers.rows import Position, RawRow
from voicemon import keys, rolling
from voicemon.event import EventType, PipelineEvent
from voicemon.redis_client import sentinel_addresses
from voicemon.settings import Settings

NOW = 1_795_000_000_000
MINUTE = 60_000


def row(event_id: str, partition: int, offset: int, org: str | None = "org-a") -> RawRow:
    event = PipelineEvent(event_id, EventType.ARTIFACT_RECEIVED, NOW - MINUTE, "a", org)
    return RawRow(event, Position(partition, offset, 0))


def test_a_markers_keys_share_their_shard_groups_slot_in_every_generation() -> None:
    for i in range(200):
        found = keys.marker(f"e-{i}")
        group = keys.seen_group(found)
        slot = key_slot(keys.seen_count(7, group).encode())
        for generation, shards in ((5, 1), (6, 1024), (7, 4096)):
            assert key_slot(keys.seen_hash(generation, shards, found).encode()) == slot


def test_the_shard_groups_spread_over_the_slots_of_three_primaries() -> None:
    thirds = {key_slot(keys.seen_count(1, g).encode()) * 3 // 16384 for g in range(16)}
    assert thirds == {0, 1, 2}


@pytest.mark.parametrize(
    "names",
    [
        [keys.store_lease(p) for p in range(64)],
        [keys.dead_lettered(p, o, i) for p, o, i in ((0, 1, None), (3, 99, 4), (7, 10**12, 0))],
        [keys.COUNTERS_EPOCH, keys.COUNTERS_SENTINEL, keys.applied("{p}"), keys.decided("{p}")],
        [
            keys.rolling_counter("org}x", 1),
            keys.applied(keys.hash_tag(keys.rolling_counter("org}x", 1))),
            keys.taken_back("{o:org}", "1:2:3"),
        ],
        [keys.CLOSER_LEASE, keys.NEXT_HOUR, keys.DIRTY, keys.WATERMARKS],
    ],
)
def test_keys_of_one_script_call_share_one_slot(names: list[str]) -> None:
    assert len({key_slot(name.encode()) for name in names}) == 1


def test_a_hash_tag_is_what_redis_hashes() -> None:
    assert keys.hash_tag("vm:rt:{p}:5") == "{p}"
    assert keys.hash_tag(keys.rolling_counter("a}b", 5)) == "{o:a}"
    assert keys.hash_tag(keys.rolling_counter("x{y}", 5)) == "{o:x{y}"


def test_increments_are_split_by_scope_and_partition_with_their_offsets() -> None:
    rows = [row("a", 0, 5), row("b", 0, 9, "org-b"), row("c", 1, 2), row("d", 0, 7)]
    found = scope_increments(rows, NOW, {})
    assert set(found) == {"{p}", "{o:org-a}", "{o:org-b}"}
    platform = {partition: (first, last) for partition, first, last, _ in found["{p}"]}
    assert platform == {0: (5, 9), 1: (2, 2)}
    assert [(p, f, last) for p, f, last, _ in found["{o:org-b}"]] == [(0, 5, 9)]
    [(_, _, _, buckets)] = [part for part in found["{p}"] if part[0] == 0]
    assert sum(b.fields["received"] for b in buckets.values()) == 3


def test_increments_after_an_applied_offset_keep_only_the_later_rows() -> None:
    rows = [row("a", 0, 5), row("b", 0, 6), row("c", 0, 7)]
    found = scope_increments(rows, NOW, {("{p}", 0): 5, ("{o:org-a}", 0): 7})
    [(partition, first, last, buckets)] = found["{p}"]
    assert (partition, first, last) == (0, 6, 7)
    assert sum(b.fields["received"] for b in buckets.values()) == 2
    assert "{o:org-a}" not in found  # everything applied there already


def test_the_platforms_range_covers_the_chunk_rows_or_not() -> None:
    rows = [row("a", 0, 5), row("b", 0, 7)]
    spans = {0: Span(3, 9, -1), 2: Span(4, 4, -1)}  # partition 2: duplicates or rejections
    found = scope_increments(rows, NOW, {}, spans)
    platform = {partition: (first, last) for partition, first, last, _ in found["{p}"]}
    assert platform == {0: (3, 9), 2: (4, 4)}
    assert [(p, f, last) for p, f, last, _ in found["{o:org-a}"]] == [(0, 5, 7)]
    assert [buckets for p, _, _, buckets in found["{p}"] if p == 2] == [{}]


def test_the_platforms_range_after_an_applied_offset_runs_to_the_chunks_end() -> None:
    rows = [row("a", 0, 5), row("b", 0, 7)]
    spans = {0: Span(3, 9, -1)}
    after = {("{p}", 0): 7, ("{o:org-a}", 0): 7}
    found = scope_increments(rows, NOW, after, spans)
    [(partition, first, last, buckets)] = found["{p}"]
    assert (partition, first, last, buckets) == (0, 8, 9, {})  # decided, nothing to add
    assert "{o:org-a}" not in found
    assert scope_increments(rows, NOW, {("{p}", 0): 9}, spans).get("{p}") is None


def test_a_decided_mark_covers_its_offset_and_those_before_appended_no_later() -> None:
    mark = DecidedMark.parse(b"41:5000")
    assert mark == DecidedMark(41, 5000)
    assert mark.covers(41, 5000) and mark.covers(0, 4000)
    assert not mark.covers(42, 5000)  # past it
    assert not mark.covers(3, 5001)  # a lower offset appended later: a recreated topic
    assert mark.covers(3, None)  # create time: the offset alone tells
    assert DecidedMark(41, -1).covers(3, 9999)  # marked from create-time records
    assert DecidedMark.parse(b"") is None and DecidedMark.parse(None) is None


def test_by_tag_groups_buckets_of_one_scope() -> None:
    buckets = rolling.increments([row("a", 0, 1).event, row("b", 0, 2, None).event], NOW)
    split = by_tag(buckets)
    assert set(split) == {"{p}", "{o:org-a}"}
    assert sum(len(group) for group in split.values()) == len(buckets)


def test_applied_offsets_outlive_the_markers() -> None:
    set_at = NOW
    assert keys.seen_expire_at_ms(set_at) < set_at + APPLIED_TTL_MS


def test_sentinels_are_host_port_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICEMON_REDIS_SENTINELS", "10.0.0.1:26379, sentinel-b:26380")
    assert Settings().redis_sentinels == ("10.0.0.1:26379", "sentinel-b:26380")
    wrong_ones = (
        "10.0.0.1",
        "host:0",
        "host:65536",
        ":26379",
        "host:port",
        "host :26379",
        "h:\u0663",
        "::1:26379",
        "[::1]",
        "[host]:26379",
        "[::1]:",
        "host:+1",
    )
    for wrong in wrong_ones:
        monkeypatch.setenv("VOICEMON_REDIS_SENTINELS", wrong)
        with pytest.raises(ValidationError, match="host:port"):
            Settings()
    accepted = "host:65535,[::1]:26379,[fe80::1:2]:1,[fe80::1%eth0]:2,Sentinel_1.example.:3"
    monkeypatch.setenv("VOICEMON_REDIS_SENTINELS", accepted)
    assert sentinel_addresses(Settings()) == [
        ("host", 65535),
        ("::1", 26379),
        ("fe80::1:2", 1),
        ("fe80::1%eth0", 2),
        ("Sentinel_1.example.", 3),
    ]


def test_sentinels_and_a_cluster_exclude_each_other(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICEMON_REDIS_SENTINELS", "host:26379")
    monkeypatch.setenv("VOICEMON_REDIS_CLUSTER", "true")
    with pytest.raises(ValidationError, match="exclude each other"):
        Settings()


def test_replicas_to_wait_for_are_zero_or_more(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().redis_wait_replicas == 0
    monkeypatch.setenv("VOICEMON_REDIS_WAIT_REPLICAS", "-1")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.setenv("VOICEMON_REDIS_WAIT_REPLICAS", "1")
    monkeypatch.setenv("VOICEMON_REDIS_WAIT_TIMEOUT_MS", "0")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.setenv("VOICEMON_REDIS_WAIT_TIMEOUT_MS", "1")
    assert (Settings().redis_wait_replicas, Settings().redis_wait_timeout_ms) == (1, 1)
    # WAIT must end before the connection's own 10 s socket timeout cuts it.
    monkeypatch.setenv("VOICEMON_REDIS_WAIT_TIMEOUT_MS", "8000")
    assert Settings().redis_wait_timeout_ms == 8_000
    monkeypatch.setenv("VOICEMON_REDIS_WAIT_TIMEOUT_MS", "8001")
    with pytest.raises(ValidationError):
        Settings()


def test_no_redis_transaction_pipelines_in_the_product() -> None:
    """redis-py's asyncio cluster client runs a MULTI pipeline's commands on an event loop of
    its own in another thread, while the worker's loop waits: after a node failure, when the
    client must reinitialize, that froze a worker for good (a py-spy dump of the hung worker of
    ``test_a_cluster_node_killed_and_restarted_mid_stream_ends_exact``). Atomic writes are
    scripts (one slot) instead; this keeps MULTI from coming back."""
    root = Path(__file__).resolve().parents[2]
    found = [
        f"{path.relative_to(root)}:{number}"
        for package in ("consumers", "aggregators", "runtime", "voicemon")
        for path in sorted((root / package).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if "transaction=True" in line or re.search(r"\.pipeline\(\s*\)", line)
    ]
    assert found == []
