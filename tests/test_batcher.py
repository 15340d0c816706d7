"""The micro-batcher: a lone query at an idle server goes at once; queries that queue during a pass share
the next one, and under load the wait gathers more."""

from __future__ import annotations

import asyncio
import threading
import time

from orchestration.serving.batcher import MicroBatcher


def test_a_lone_query_at_an_idle_server_does_not_wait():
    async def main():
        b = MicroBatcher(lambda items: [x * 2 for x in items], max_batch=8, max_wait_ms=2000)
        await b.start()
        t0 = time.perf_counter()
        got = await b.submit(21)
        elapsed = time.perf_counter() - t0
        await b.stop()
        return got, elapsed, b.batches

    got, elapsed, batches = asyncio.run(main())
    assert got == 42 and batches == [1]
    assert elapsed < 1.0  # the 2 s wait is for company under load, not for a lone query


def test_queries_queued_during_a_pass_share_the_next_and_the_wait_gathers_more_under_load():
    release = threading.Event()

    def run(items):
        if items == [0]:
            release.wait(5)  # the first pass is busy while the others arrive
        return [x + 100 for x in items]

    async def main():
        b = MicroBatcher(run, max_batch=8, max_wait_ms=300)
        await b.start()
        first = asyncio.create_task(b.submit(0))
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(b.submit(i)) for i in range(1, 5)]
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.sleep(0.1)  # inside the second pass's wait: it is under load, so it waits for these
        late = [asyncio.create_task(b.submit(i)) for i in range(5, 7)]
        answers = await asyncio.gather(first, *queued, *late)
        await b.stop()
        return answers, b.batches

    answers, batches = asyncio.run(main())
    assert answers == [100 + i for i in range(7)]
    assert batches == [1, 6]
