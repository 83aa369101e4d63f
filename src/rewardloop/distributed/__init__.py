"""Ray scale-out: rollout workers running the same ``collect_step`` as a local run (``run.backend: ray``), reward
workers, a learner actor (``learner.py``), the optional vLLM sampler (``vllm_backend.py``), and Tune.

The only package importing ray (and vllm); its modules import them themselves, so importing this package costs
nothing. Trainers reach the Ray collector and learner through ``algorithms.common.collector`` / ``make_learner``
(docs/guides/distributed.md).
"""
