"""Evaluation from logs: off-policy estimators (``ope``) and recommendation / fairness metrics (``metrics``)."""
