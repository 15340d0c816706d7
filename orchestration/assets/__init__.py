"""The Dagster assets by group, as the Dagster reference projects lay them out: each module builds its
group's assets from the step registry (upstream, pool, code version) and the step functions."""
