"""The adaptive interval: idle waits double from min_interval to max_interval, jittered."""

from __future__ import annotations

import random

from rainbow_aio import RainbowClient
from rainbow_aio.poller._poller import idle_backoff, jittered


def test_idle_waits_double_up_to_max_interval_and_are_jittered(
    rainbow_client: RainbowClient,
) -> None:
    poller = rainbow_client.poller("alpha", "secret", min_interval=0.5, max_interval=3.0)
    backoffs = []
    backoff = 0.0
    for _ in range(6):
        backoff = idle_backoff(backoff, poller.options)
        backoffs.append(backoff)
    assert backoffs == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    random.seed(1)
    waits = [jittered(3.0) for _ in range(1000)]
    # each wait is drawn from [half, all] of the interval, so idle pollers drift apart
    assert all(1.5 <= w <= 3.0 for w in waits)
    assert max(waits) - min(waits) > 1.0
