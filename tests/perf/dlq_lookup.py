"""The DLQ lookup of a create-time rejection replayed after its marker ended
(``DeadLetters.holding``): a worker's first read of a DLQ partition, its memory, and a
replayed chunk's lookup once the partition is read.

    python -m tests.perf.dlq_lookup [--letters 500000] [--asked 500]

Needs the local stack (``voicemon stack up``); every byte goes to 127.0.0.1. Publishes
``--letters`` letters (200-byte payloads, the headers of CONTRACT §2) to one partition of a
topic of its own, then times the first lookup (which reads them all), the memory its index
keeps (its keys, and the process's growth, which holds the reader's fetch buffers too), and
the lookup of ``--asked`` sources, half of them there (the best of 5).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from consumers.dead_letters import DeadLetters
from consumers.letters import payload_digest
from voicemon.publisher import KafkaPublisher
from voicemon.settings import Settings


def payload(offset: int) -> bytes:
    return b'{"event_id": "%012d", ' % offset + b"x" * 176


def publish(bootstrap: str, topic: str, letters: int, at_ms: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50})
    for offset in range(letters):
        headers = [("voicemon-reason", b"invalid_json"), ("voicemon-detail", b"not JSON"),
                   ("voicemon-source-partition", b"0"),
                   ("voicemon-source-offset", str(offset).encode())]  # fmt: skip
        while True:
            try:
                producer.produce(topic, payload(offset), partition=0, timestamp=at_ms,
                                 headers=headers)  # fmt: skip
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(120) == 0


def rss_kib() -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--letters", type=int, default=500_000)
    parser.add_argument("--asked", type=int, default=500)
    args = parser.parse_args()
    bootstrap = Settings().kafka_bootstrap
    topic = f"perf-dlq-lookup-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(timeout=30)
    at_ms = int(time.time() * 1000) - 3_600_000
    try:
        started = time.perf_counter()
        publish(bootstrap, topic, args.letters, at_ms)
        published_s = time.perf_counter() - started
        reader = DeadLetters(KafkaPublisher(bootstrap), bootstrap, topic)
        step = max(1, args.letters // args.asked)
        asked = {(0, o, None): payload_digest(payload(o if i % 2 else o + 1))
                 for i, o in enumerate(range(0, args.letters, step))}  # fmt: skip
        before = rss_kib()
        started = time.perf_counter()
        found = reader.holding(asked, at_ms - 1)
        first_s = time.perf_counter() - started
        grown = rss_kib() - before
        assert len(found) == len(asked) // 2, (len(found), len(asked))
        index = sum(keys.nbytes for read in reader._read.values()
                    for keys in read.letters._hours.values())  # fmt: skip
        again = []
        for _ in range(5):
            started = time.perf_counter()
            reader.holding(asked, at_ms - 1)
            again.append(time.perf_counter() - started)
        print(json.dumps({
            "letters": args.letters, "published_s": round(published_s, 1),
            "first_read_s": round(first_s, 2),
            "first_read_letters_per_s": round(args.letters / first_s),
            "index_bytes_per_letter": round(index / args.letters, 1),
            "rss_growth_mib": round(grown / 1024, 1),
            "asked": len(asked), "found": len(found),
            "lookup_after_read_ms": round(min(again) * 1000, 2),
        }, indent=2))  # fmt: skip
    finally:
        for future in admin.delete_topics([topic]).values():
            future.result(timeout=30)


if __name__ == "__main__":
    main()
