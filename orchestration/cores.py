"""How many CPU cores a step uses: its own params' ``threads`` where the result depends on it, else all.

A step's thread count is fixed for the whole step and never follows what runs beside it: float reductions
differ with the thread count, so a count set by the schedule would make the outputs depend on it.
COMPODIFF_CORES caps the cores of a machine shared with other work.
"""

from __future__ import annotations

import os

CORES_ENV = "COMPODIFF_CORES"


def cores() -> int:
    """The cores a step may use: COMPODIFF_CORES when set, else the machine's."""
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


def use_cores(configured: int | None = None) -> int:
    """Size torch's thread pool for the step: ``configured`` (params: the step's ``threads``), else ``cores()``.
    Returns the count."""
    import torch

    n = min(configured, os.cpu_count() or 1) if configured else cores()
    torch.set_num_threads(n)
    return n
