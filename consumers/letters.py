"""A rejection as the DLQ carries it: the payload untouched, its source and the headers of
CONTRACT §2 and §3.0, or an envelope of it (§3.3); and an index of the letters a DLQ
partition holds. Pure data; ``consumers.dead_letters`` publishes and reads them."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import xxhash

from consumers.decode import RejectedPayload
from voicemon.windows import HOUR_MS

if TYPE_CHECKING:
    from voicemon.publisher import Headers

ENVELOPE_BYTES = 65_536  # an envelope carries this much of the original (CONTRACT §3.3)
Source = tuple[int, int, int | None]  # (source partition, source offset, batch index)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    rejected: RejectedPayload
    key: bytes | None
    partition: int
    offset: int
    appended_ms: int | None = None  # the source record's log-append time, if it has one

    def headers(self) -> Headers:
        rejection = self.rejected.rejection
        headers = [
            ("voicemon-reason", rejection.reason.value.encode()),
            ("voicemon-detail", rejection.detail.encode()),
            ("voicemon-source-partition", str(self.partition).encode()),
            ("voicemon-source-offset", str(self.offset).encode()),
        ]
        if self.rejected.batch_index is not None:
            headers.append(("voicemon-batch-index", str(self.rejected.batch_index).encode()))
        return headers

    @property
    def source(self) -> Source:
        return self.partition, self.offset, self.rejected.batch_index

    def envelope(self) -> tuple[bytes, Headers]:
        """The letter as an envelope (pure): the first ``ENVELOPE_BYTES`` of the original, and
        its headers plus ``voicemon-truncated``, ``voicemon-sha256`` (hex, of the whole
        original) and ``voicemon-original-bytes``."""
        payload = self.rejected.payload or b""
        return payload[:ENVELOPE_BYTES], [
            *self.headers(),
            ("voicemon-truncated", b"1"),
            ("voicemon-sha256", hashlib.sha256(payload).hexdigest().encode()),
            ("voicemon-original-bytes", str(len(payload)).encode()),
        ]


def payload_digest(payload: bytes | None) -> bytes:
    """What tells a letter's bytes from others' (pure): their sha256; empty for no value."""
    return b"" if payload is None else hashlib.sha256(payload).digest()


def record_digest(headers: Mapping[str, str], value: bytes | None) -> bytes:
    """The ``payload_digest`` of the original a DLQ record carries (pure): of its value, or,
    for an envelope, the sha256 of the whole original its headers give."""
    if headers.get("voicemon-truncated") == "1":
        try:
            digest = bytes.fromhex(headers["voicemon-sha256"])
        except (KeyError, ValueError):
            digest = b""
        return digest if len(digest) == hashlib.sha256().digest_size else b"?"  # "?": no match
    return payload_digest(value)


class SentLetters:
    """The letters a DLQ partition holds, as 8-byte keys of (source, digest), by the hour of
    their time (pure). Sorted arrays: a lookup costs a binary search an hour, an hour's
    letters 8 bytes each (plus the keys ``add``ed since the last ``seal``)."""

    def __init__(self) -> None:
        self._hours: dict[int, np.ndarray] = {}
        self._new: defaultdict[int, list[int]] = defaultdict(list)

    def add(self, source: Source, digest: bytes, at_ms: int) -> None:
        self._new[at_ms // HOUR_MS].append(_key(source, digest))

    def seal(self) -> None:
        """Sort the keys added since the last call into their hours."""
        for hour, added in self._new.items():
            keys = np.array(added, dtype=np.uint64)
            held = self._hours.get(hour)
            self._hours[hour] = np.unique(keys if held is None else np.concatenate((held, keys)))
        self._new.clear()

    def forget_before(self, since_ms: int) -> None:
        """Drop the hours wholly before ``since_ms``."""
        self._hours = {hour: keys for hour, keys in self._hours.items()
                       if hour >= since_ms // HOUR_MS}  # fmt: skip

    def holds(self, source: Source, digest: bytes) -> bool:
        key = np.uint64(_key(source, digest))
        for keys in self._hours.values():
            at = int(np.searchsorted(keys, key))
            if at < len(keys) and keys[at] == key:
                return True
        return False


def _key(source: Source, digest: bytes) -> int:
    """A letter's 8-byte key: xxHash64 of its source and digest (pure)."""
    partition, offset, index = source
    named = f"{partition}:{offset}:{-1 if index is None else index}:".encode()
    return xxhash.xxh64_intdigest(named + digest)
