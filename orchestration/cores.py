"""How many CPU cores a step may use: all of them, unless the lifecycle runs it beside another step.

The lifecycle's side lane (orchestration.lifecycle) runs two steps at once, one core each, and says so
through COMPODIFF_CORES; every step sizes its torch thread pool and its worker processes from here.
"""

from __future__ import annotations

import os

CORES_ENV = "COMPODIFF_CORES"


def cores() -> int:
    """The cores this step may use: COMPODIFF_CORES when set, else the machine's."""
    machine = os.cpu_count() or 1
    value = os.environ.get(CORES_ENV)
    if not value:
        return machine
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{CORES_ENV}={value!r}: expected a whole number of cores") from None
    if n < 1:
        raise ValueError(f"{CORES_ENV}={value!r}: at least one core")
    return min(n, machine)


_pinned: bool = False  # the running step's thread count comes from params: it never changes mid-step


def use_cores(configured: int | None = None) -> int:
    """Size torch's thread pool. ``configured`` (params: a training step's ``threads``) pins it for the
    whole step, whatever runs beside: a thread count that changed mid-run with the side lane's timing
    made training differ from run to run. Otherwise ``cores()``, followed as it changes. Returns the count."""
    import torch

    global _pinned
    _pinned = configured is not None
    n = min(configured, os.cpu_count() or 1) if configured else cores()
    torch.set_num_threads(n)
    return n


def follow_cores() -> None:
    """Between the iterations of a long step that is not pinned: take up the cores the side lane has handed
    back since the step started. Call from the step's own thread: torch's pool size is per thread."""
    import torch

    if _pinned:
        return
    n = cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
