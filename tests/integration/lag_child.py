"""A lag-measuring process for tests/integration/test_consumer_lag.py.

python -m tests.integration.lag_child BOOTSTRAP GROUP TOPIC
    measures the group's lag with ``consumers.lag.BrokerLag`` every 20 ms until killed and
    prints "measured" or "unavailable" after each attempt (flushed at once): a test can
    restart the broker beneath it and see it live on (or die of a signal).
"""

from __future__ import annotations

import sys
import time

from consumers.lag import BrokerLag, LagUnavailable


def main(bootstrap: str, group: str, topic: str) -> None:
    lag = BrokerLag({"bootstrap.servers": bootstrap}, group, topic, timeout_s=2)
    while True:
        try:
            lag.measure()
            print("measured", flush=True)
        except LagUnavailable:
            print("unavailable", flush=True)
        time.sleep(0.02)


if __name__ == "__main__":
    main(*sys.argv[1:4])
