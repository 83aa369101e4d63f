"""Training the language model's own weights with the slate policy gradient (the ``lm-tuned`` policy).

``slate_pg.train`` trains a scoring head on the LM's hidden states; the LM itself stays frozen, so what the head and
``lm-online``'s neural-linear layer can read is bounded by a randomly initialised LM's mean-pooled states. Here the
same policy-gradient loss also flows into the LM: with θ the LM's weights and ψ the head's,

    s_i = z_x(θ)ᵀ W z_i(θ) / r + vᵀ z_i(θ) / √r,   z = (h_θ(text) − μ) P / σ     (h_θ: mean final hidden state)
    ∇_{θ,ψ} L_topk = −Σ_k min(π(a_k|s)/β(a_k|s), c̄) · λ_L(a_k) · A_k · ∇ log π(a_k|s)

so that the LM learns to write the persona × item match into its states. Each minibatch reads its distinct texts
(contexts and candidates) again through the LM, with gradient; β stays the logged behaviour probability, so replayed
rounds remain off-policy corrected. After training the logged steps' features are read again with the trained LM
(``refresh``) before they become ``lm-online``'s prior.

This module is handed to ``slate_pg.train`` (``tuner=``) by ``rewardloop personalize``; it does not import
``slate_pg`` (algorithms share code only through shared modules): the head, the state reader and the logged steps
come in as arguments.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def text_index(pairs: list[tuple[str, list[str]]]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """The distinct texts of (context, items) pairs and each pair's rows in it: texts, contexts [N], items [N, K]."""
    rows: dict[str, int] = {}
    contexts = [rows.setdefault(context, len(rows)) for context, _ in pairs]
    items = [[rows.setdefault(t, len(rows)) for t in texts] for _, texts in pairs]
    return list(rows), torch.tensor(contexts), torch.tensor(items)


class LMTuner:
    """Makes the LM's weights trainable by ``slate_pg.train``: ``index(logged)`` adds each logged step's text rows to
    the training data, ``scores(head, batch)`` reads a minibatch's texts through the LM with gradient and scores them
    with the head, ``parameters()`` are the LM's. ``states(model, tokenizer, texts, grad=)`` is the state reader
    (``slate_pg.lm_states``: mean final hidden state of each text read alone)."""

    def __init__(self, model, tokenizer, states: Callable) -> None:
        self.model, self.tokenizer, self.states = model.requires_grad_(True), tokenizer, states
        self.texts: list[str] = []

    def parameters(self):
        return self.model.parameters()

    def index(self, logged) -> dict[str, torch.Tensor]:
        """Text rows of the logged steps (each with ``texts = (context, items)``): context_row [N], item_rows [N, K]."""
        if missing := [n for n, s in enumerate(logged) if s.texts is None]:
            raise ValueError(f"logged step {missing[0]} has no texts: the LM can be tuned on towers-read steps only")
        self.texts, contexts, items = text_index([s.texts for s in logged])
        return {"context_row": contexts, "item_rows": items}

    def scores(self, head, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The head's scores of a minibatch, the LM reading its distinct texts once, with gradient: [B, K]."""
        contexts, items = batch["context_row"], batch["item_rows"]  # [B], [B, K]
        rows, inverse = torch.unique(torch.cat([contexts, items.flatten()]), return_inverse=True)
        h = self.states(self.model, self.tokenizer, [self.texts[i] for i in rows.tolist()], grad=True)  # [U, d]
        b, k = items.shape
        h_x, h_i = h[inverse[:b]], h[inverse[b:]].reshape(b, k, -1)  # [B, d], [B, K, d]
        return head(torch.zeros(b, k), h_x, h_i)

    @torch.no_grad()
    def refresh(self, logged, batch_size: int = 256) -> None:
        """Read every logged step's texts again with the (trained) LM and replace its states, in place: the features
        ``lm-online``'s prior is built from must be the ones the trained LM gives."""
        texts, contexts, items = text_index([s.texts for s in logged])
        chunks = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
        h = np.concatenate([self.states(self.model, self.tokenizer, chunk) for chunk in chunks])  # [U, d]
        for step, context, rows in zip(logged, contexts.tolist(), items.tolist(), strict=True):
            step.features.h_context, step.features.h_items = h[context], h[rows]

    def freeze(self):
        """The trained LM, frozen again (for evaluation)."""
        return self.model.eval().requires_grad_(False)
