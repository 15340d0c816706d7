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


_configured: int | None = None  # what the running step asked use_cores for


def use_cores(configured: int | None = None) -> int:
    """Size torch's thread pool: ``configured`` (params), capped by ``cores()``. Returns the count."""
    import torch

    global _configured
    _configured = configured
    n = min(configured or cores(), cores())
    torch.set_num_threads(n)
    return n


def follow_cores() -> None:
    """Between the iterations of a long step: take up the cores the side lane has handed back since
    the step started (its thread pool was sized while the lane ran). Call from the step's own thread:
    torch's pool size is per thread."""
    import torch

    n = min(_configured or cores(), cores())
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
