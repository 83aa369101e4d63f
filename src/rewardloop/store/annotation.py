"""The annotation queue behind ``/annotate``: pairs of responses to one prompt, labelled by annotators.

    queue = AnnotationQueue(store)
    queue.add_pairs(queue.pairs_from_interactions())   # every two answers to the same prompt become an item
    item = queue.next_item("alice")                     # one alice has not labelled, or None
    queue.label(item["id"], "alice", "response")        # response | other | tie | both_bad

A label is pairwise feedback (``PAIRWISE_VALUES``: 1 = ``response_id`` better, 0 = ``other_response_id`` better,
0.5 = tie, -1 = both bad) with ``user_id`` = the annotator and idempotency key ``annotate:<item>:<annotator>`` — so an
annotator labels an item at most once (a double submit is stored once), and the labels export like any other
pairwise feedback (``rewardloop feedback export --format pairs``). Items go to annotators until each has ``overlap``
labels; items already started come first, so overlapping labels accumulate for the agreement statistics
(Cohen's κ per pair of annotators on the items both labelled).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from itertools import combinations
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from rewardloop.store.models import AnnotationItem, Feedback, Interaction
from rewardloop.store.store import Store, StoreError, as_dict

KEY = "annotate:"
CHOICES = {"response": 1.0, "other": 0.0, "tie": 0.5, "both_bad": -1.0}


def cohen_kappa(x: list[Any], y: list[Any]) -> float:
    """Cohen's κ = (p_o − p_e) / (1 − p_e) of two raters' labels on the same items (Cohen 1960); NaN when undefined
    (no items, or both raters always gave one and the same label, so p_e = 1)."""
    if len(x) != len(y):
        raise ValueError(f"cohen_kappa: {len(x)} labels vs {len(y)}; the raters must label the same items")
    n = len(x)
    if n == 0:
        return math.nan
    p_o = sum(a == b for a, b in zip(x, y, strict=True)) / n
    cx, cy = Counter(x), Counter(y)
    p_e = sum(cx[c] * cy[c] for c in cx) / (n * n)
    return math.nan if p_e == 1.0 else (p_o - p_e) / (1.0 - p_e)


def _prompt_key(it: Interaction) -> str:
    return json.dumps([it.prompt, it.messages], sort_keys=True)


class AnnotationQueue:
    """Items to compare and annotators' labels, in ``store``'s database."""

    def __init__(self, store: Store, overlap: int = 2) -> None:
        if overlap < 1:
            raise StoreError(f"overlap: expected at least 1 label per item, got {overlap!r}")
        self.store, self.overlap = store, overlap

    # -- filling the queue ---------------------------------------------------------------------------------------

    def pairs_from_interactions(self, per_prompt: int = 1) -> list[tuple[str, str]]:
        """Up to ``per_prompt`` pairs of differing responses for every prompt answered more than once (two model
        versions or two samples), oldest first."""
        groups: dict[str, list[Interaction]] = defaultdict(list)
        with self.store._session() as s:
            for it in s.scalars(select(Interaction).order_by(Interaction.created_at, Interaction.id)):
                groups[_prompt_key(it)].append(it)
        pairs = []
        for answers in groups.values():
            distinct: dict[str, Interaction] = {}
            for a in answers:
                distinct.setdefault(a.completion, a)
            pairs += [(a.id, b.id) for a, b in list(combinations(distinct.values(), 2))[:per_prompt]]
        return pairs

    def add_pairs(self, pairs: list[tuple[str, str]]) -> int:
        """Queue ``pairs`` of response ids (same prompt, different responses); returns how many were new. A pair
        already queued, in either order, is skipped; an invalid pair raises StoreError naming it and adds nothing."""
        with self.store._session() as s:
            new = []
            for i, (a, b) in enumerate(pairs):
                rows = s.get(Interaction, a), s.get(Interaction, b)
                for rid, row in zip((a, b), rows, strict=True):
                    if row is None:
                        raise StoreError(f"pairs[{i}]: unknown response id {rid!r}")
                if a == b or _prompt_key(rows[0]) != _prompt_key(rows[1]):
                    raise StoreError(f"pairs[{i}]: {a!r} and {b!r} must be two responses to the same prompt")
                new.append(tuple(sorted((a, b))))
            queued = set(s.execute(select(AnnotationItem.response_id, AnnotationItem.other_response_id)).tuples())
            fresh = sorted(set(new) - queued)
            s.add_all(AnnotationItem(response_id=a, other_response_id=b) for a, b in fresh)
            try:
                s.commit()
            except IntegrityError:  # a concurrent add queued some of them first: add the rest one by one
                s.rollback()
                return sum(self.add_pairs([p]) for p in fresh) if len(fresh) > 1 else 0
        return len(fresh)

    # -- labelling -----------------------------------------------------------------------------------------------

    def _labels(self) -> dict[int, dict[str, float]]:
        """item id → {annotator: value} from the stored annotation feedback."""
        out: dict[int, dict[str, float]] = defaultdict(dict)
        with self.store._session() as s:
            q = select(Feedback.idempotency_key, Feedback.value).where(Feedback.idempotency_key.startswith(KEY))
            for key, value in s.execute(q).tuples():
                item, _, annotator = key.removeprefix(KEY).partition(":")
                out[int(item)][annotator] = value
        return out

    def next_item(self, annotator: str) -> dict[str, Any] | None:
        """An item ``annotator`` has not labelled that still needs labels (started items first), with both
        interactions (``response``, ``other``); None when there is none."""
        labels = self._labels()
        with self.store._session() as s:
            ids = s.scalars(select(AnnotationItem.id).order_by(AnnotationItem.id)).all()
            todo = [i for i in ids if annotator not in labels.get(i, {}) and len(labels.get(i, {})) < self.overlap]
            if not todo:
                return None
            item = s.get(AnnotationItem, max(todo, key=lambda i: (len(labels.get(i, {})), -i)))
            response, other = s.get(Interaction, item.response_id), s.get(Interaction, item.other_response_id)
            return {**as_dict(item), "response": as_dict(response), "other": as_dict(other)}

    def label(self, item_id: int, annotator: str, choice: str, comment: str | None = None) -> bool:
        """Store ``annotator``'s label of item ``item_id``; False when they had already labelled it (kept as was)."""
        if choice not in CHOICES:
            raise StoreError(f"choice: {choice!r} is not one of {', '.join(CHOICES)}")
        with self.store._session() as s:
            item = s.get(AnnotationItem, item_id)
        if item is None:
            raise StoreError(f"item: unknown annotation item {item_id!r}")
        _, created = self.store.add_feedback(
            response_id=item.response_id,
            other_response_id=item.other_response_id,
            kind="pairwise",
            value=CHOICES[choice],
            idempotency_key=f"{KEY}{item_id}:{annotator}",
            comment=(comment or "").strip() or None,
            user_id=annotator,
        )
        return created

    # -- progress and agreement ----------------------------------------------------------------------------------

    def count_by(self, annotator: str) -> int:
        return sum(annotator in by for by in self._labels().values())

    def progress(self) -> dict[str, Any]:
        """Items, how many have a label / ``overlap`` labels, labels per annotator, and Cohen's κ for every pair
        of annotators on the items both labelled (``n`` = those items)."""
        labels = self._labels()
        with self.store._session() as s:
            n_items = len(s.scalars(select(AnnotationItem.id)).all())
        per = Counter(a for by in labels.values() for a in by)
        agreement = []
        for a, b in combinations(sorted(per), 2):
            both = [by for by in labels.values() if a in by and b in by]
            if both:
                x, y = [by[a] for by in both], [by[b] for by in both]
                agreement.append({"a": a, "b": b, "n": len(both), "kappa": cohen_kappa(x, y)})
        return {
            "items": n_items,
            "labelled": sum(1 for by in labels.values() if by),
            "complete": sum(1 for by in labels.values() if len(by) >= self.overlap),
            "overlap": self.overlap,
            "per_annotator": dict(sorted(per.items())),
            "agreement": agreement,
        }
