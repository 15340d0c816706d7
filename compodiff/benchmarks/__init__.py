"""The four zero-shot CIR benchmarks as the peers score them (shared/reference/benchmarks.md).

Each module reads the official files from a local path (a missing image fails loudly, with its path)
and scores similarity matrices or rankings: the metric code never sees a model.
"""
