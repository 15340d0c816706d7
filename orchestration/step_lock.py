"""One writer per step and partition: a second run of the same step on the same project fails at once,
naming the process that holds it, instead of racing it for the outputs (``flock``: released when the
holder exits, killed or not, so a killed run leaves no stale lock)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from compodiff.errors import InputError
from orchestration.layout import Layout


class StepBusy(InputError):
    pass


@contextlib.contextmanager
def step_lock(layout: Layout, step: str, items: list[str] | None = None) -> Iterator[None]:
    """Hold the locks of ``step`` (each of its ``items``: partitions) for the body. Ranks other than 0 of a
    distributed run share rank 0's lock."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    folder = layout.data / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        for item in sorted(items or [""]):  # one order everywhere: two multi-partition runs cannot deadlock
            path = folder / (f"{step}[{item}].lock" if item else f"{step}.lock")
            f = stack.enter_context(open(path, "a+"))
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise StepBusy(f"{step}{f'[{item}]' if item else ''} is already running on this project "
                               f"(process {holder}, lock {path}); wait for it or stop it") from None
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
        yield
