"""A publisher process for tests/integration/test_producer.py.

python -m tests.integration.producer_child BOOTSTRAP TOPIC stream
    publishes events until killed and prints each event_id once its future says
    delivered (one line each, flushed at once);
python -m tests.integration.producer_child BOOTSTRAP TOPIC exit N
    queues N events with a one-hour linger, prints "queued N" and returns without
    flushing or closing: only the flush at interpreter exit can send them.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import Future

from voicemon.producer import Delivery, EventProducer

_print_lock = threading.Lock()


def _report(future: Future[Delivery]) -> None:
    if future.exception() is None:
        with _print_lock:
            sys.stdout.write(f"{future.result().event_id}\n")
            sys.stdout.flush()


def stream(producer: EventProducer) -> None:
    serial = 0
    while True:
        for _ in range(50):
            serial += 1
            event = producer.events.artifact_received(f"art-{serial}", organization_id="acme")
            producer.publish(event).add_done_callback(_report)
        time.sleep(0.005)


def queue_and_exit(producer: EventProducer, count: int) -> None:
    for serial in range(count):
        producer.publish(producer.events.artifact_received(f"art-{serial}"))
    print(f"queued {count}", flush=True)


def main(bootstrap: str, topic: str, mode: str, *rest: str) -> None:
    if mode == "stream":
        stream(EventProducer(bootstrap, topic, linger_s=0.02))
    else:
        queue_and_exit(EventProducer(bootstrap, topic, linger_s=3600), int(rest[0]))


if __name__ == "__main__":
    main(*sys.argv[1:])
