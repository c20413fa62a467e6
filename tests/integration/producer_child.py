"""A publisher process for tests/integration/test_producer.py and test_producer_faults.py.

python -m tests.integration.producer_child BOOTSTRAP TOPIC stream
    publishes events until killed and prints each event_id once its future says
    delivered (one line each, flushed at once);
python -m tests.integration.producer_child BOOTSTRAP TOPIC exit N [CLOSE_TIMEOUT_S]
    queues N events with a one-hour linger, prints "queued N" and returns without
    flushing or closing: only the close at interpreter exit can send them;
python -m tests.integration.producer_child BOOTSTRAP TOPIC sigterm N on|off|chain
    queues N events with a one-hour linger, prints "queued N" and sleeps: "on" closes on
    SIGTERM (then the default handling ends the process), "off" does not ask for it, "chain"
    installs a handler of its own first that prints "previous handler ran" and exits 3.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from concurrent.futures import Future
from types import FrameType

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


def queue(producer: EventProducer, count: int) -> None:
    for serial in range(count):
        producer.publish(producer.events.artifact_received(f"art-{serial}"))
    print(f"queued {count}", flush=True)


def _own_handler(signum: int, frame: FrameType | None) -> None:
    print("previous handler ran", flush=True)
    sys.exit(3)


def main(bootstrap: str, topic: str, mode: str, *rest: str) -> None:
    if mode == "stream":
        stream(EventProducer(bootstrap, topic, linger_s=0.02))
    elif mode == "exit":
        close_timeout_s = float(rest[1]) if len(rest) > 1 else 5.0
        queue(EventProducer(bootstrap, topic, linger_s=3600, close_timeout_s=close_timeout_s),
              int(rest[0]))  # fmt: skip
    else:
        signal.signal(signal.SIGTERM, _own_handler if rest[1] == "chain" else signal.SIG_DFL)
        producer = EventProducer(bootstrap, topic, linger_s=3600, close_on_sigterm=rest[1] != "off")
        queue(producer, int(rest[0]))
        time.sleep(120)


if __name__ == "__main__":
    main(*sys.argv[1:])
