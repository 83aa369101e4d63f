"""Ray scale-out: rollout workers running the same ``collect_step`` as a local run (``run.backend: ray``), and Tune.

The only package importing ray; its modules import ray themselves, so importing this package costs nothing.
Trainers reach the Ray collector through ``algorithms.common.collector`` (docs/guides/distributed.md).
"""
