"""Micro-batching: the queries queued while the previous pass ran, and those that arrive within
``max_wait_ms`` of the first, share one batched denoiser pass (up to ``max_batch``), as
`CompoDiffPipeline.compose` batches. One worker thread runs the passes, so the event loop keeps accepting
requests meanwhile. The wait applies only under load (queries queued, or the last pass held more than
one): a lone query at an idle server never waits for company that is not coming."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable


class MicroBatcher:
    def __init__(self, run: Callable[[list], list], max_batch: int = 32, max_wait_ms: float = 5.0):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch {max_batch} must be >= 1 and max_wait_ms {max_wait_ms} >= 0")
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000
        self.queue: asyncio.Queue | None = None
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="compodiff-batch")
        self.task: asyncio.Task | None = None
        self.batches: list[int] = []  # the size of each pass, for the load benchmark

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.pool.shutdown(wait=True)

    async def submit(self, item):
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((item, fut))
        return await fut

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch and not self.queue.empty():  # what queued during the last pass
                batch.append(self.queue.get_nowait())
            busy = len(batch) > 1 or bool(self.batches) and self.batches[-1] > 1
            deadline = loop.time() + (self.max_wait if busy else 0.0)
            while len(batch) < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), timeout))
                except TimeoutError:
                    break
            self.batches.append(len(batch))
            items = [item for item, _ in batch]
            try:
                results = await loop.run_in_executor(self.pool, self.run, items)
            except Exception as err:  # noqa: BLE001 - each waiting request gets the failure, the loop goes on
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            for (_, fut), result in zip(batch, results):
                if not fut.done():
                    fut.set_result(result)
