"""Benchmarks: speed, memory and learning of rewardloop against `model.generate`, TRL and the machine's own limit.

`python -m benchmarks.run_all [--quick] [--only a,d]` runs every section, each in its own worker process (so peak RSS
is per side), prints one JSON document and rewrites the tables in docs/benchmarks.md. Workers for TRL run in their own
virtual environments (benchmarks/setup_trl_envs.sh); this package's `common` module is importable there (stdlib + torch
only), everything that imports rewardloop runs in the project's environment.
"""
