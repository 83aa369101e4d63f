"""The feedback loop's state in the store: the model-version registry (which version serves) and the rounds.

    state = LoopState(store)
    state.serving()                                   # the version the server should run, or None
    rnd = state.start_round("dpo", parent="v0", feedback_ids=state.unclaimed(("pairwise",)), run_dir="runs/loop/r1")
    state.finish_round(rnd["id"], "promoted", candidate={"name": "r1", "path": ".../policy"}, metrics={...})
    state.rollback()                                  # the serving version's parent serves again

A round claims feedback when it starts (``feedback_ids`` is fixed from then on, so a resumed round trains on the same
rows); ``finish_round`` marks those rows with the round's id, registers the candidate and — when promoted — makes it
the serving version, all in one transaction. Feedback is claimed by "not yet used by a round", not by an id cursor,
so rows committed late (PostgreSQL hands out ids before commit) are never skipped, and no row is used twice. One loop
process runs at a time per store (a second would start its own rounds on the same rows).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from rewardloop.store.models import Feedback, LoopRound, ModelVersion, utcnow
from rewardloop.store.store import Store, StoreError, as_dict


class LoopState:
    """Rounds and the serving version, in ``store``'s database."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- the registry ---------------------------------------------------------------------------------------------

    def serving(self) -> dict[str, Any] | None:
        """The version with status ``serving`` (the newest, should there be several), or None."""
        with self.store._session() as s:
            q = select(ModelVersion).where(ModelVersion.status == "serving").order_by(ModelVersion.id.desc())
            mv = s.scalars(q.limit(1)).first()
            return as_dict(mv) if mv is not None else None

    def _serve(self, s, mv: ModelVersion) -> None:
        for old in s.scalars(select(ModelVersion).where(ModelVersion.status == "serving", ModelVersion.id != mv.id)):
            old.status = "retired"
        mv.status = "serving"

    def promote(self, name: str) -> None:
        """Make version ``name`` the serving one (the previous one retires)."""
        with self.store._session() as s:
            mv = s.scalar(select(ModelVersion).where(ModelVersion.name == name))
            if mv is None:
                raise StoreError(f"name: unknown model version {name!r}")
            self._serve(s, mv)
            s.commit()

    def rollback(self) -> dict[str, Any]:
        """The serving version's parent serves again; the rolled-back version is marked ``retired`` with
        ``metrics.rolled_back``. Returns the version now serving."""
        with self.store._session() as s:
            q = select(ModelVersion).where(ModelVersion.status == "serving").order_by(ModelVersion.id.desc())
            current = s.scalars(q.limit(1)).first()
            if current is None:
                raise StoreError("rollback: no version is serving")
            if current.parent_id is None:
                raise StoreError(f"rollback: {current.name!r} has no parent version to return to")
            parent = s.get(ModelVersion, current.parent_id)
            current.metrics = {**current.metrics, "rolled_back": True}
            self._serve(s, parent)
            current.status = "retired"
            s.commit()
            return as_dict(parent)

    # -- rounds ---------------------------------------------------------------------------------------------------

    def open_round(self) -> dict[str, Any] | None:
        """The round that started and did not finish (a crash mid-round), or None."""
        with self.store._session() as s:
            rnd = s.scalars(select(LoopRound).where(LoopRound.status == "running").order_by(LoopRound.id)).first()
            return as_dict(rnd) if rnd is not None else None

    def unclaimed(self, kinds: tuple[str, ...]) -> list[int]:
        """Ids of feedback of ``kinds`` that no round has used and the open round has not claimed, oldest first."""
        open_round = self.open_round()
        claimed = set(open_round["feedback_ids"]) if open_round else set()
        with self.store._session() as s:
            q = select(Feedback.id).where(Feedback.round_id.is_(None), Feedback.kind.in_(kinds)).order_by(Feedback.id)
            return [i for i in s.scalars(q) if i not in claimed]

    def start_round(self, algo: str, parent: str, feedback_ids: list[int], run_dir: str) -> dict[str, Any]:
        if self.open_round() is not None:
            raise StoreError("a round is already running: finish or resume it first")
        with self.store._session() as s:
            rnd = LoopRound(
                status="running", algo=algo, parent=parent, feedback_ids=list(feedback_ids), run_dir=run_dir, metrics={}
            )
            s.add(rnd)
            s.commit()
            return as_dict(rnd)

    def finish_round(
        self, round_id: int, status: str, candidate: dict[str, Any], metrics: dict[str, Any]
    ) -> dict[str, Any]:
        """Close round ``round_id`` as ``promoted`` or ``rejected``: register ``candidate`` ({name, path}) as a child
        of the round's parent (serving if promoted), mark the claimed feedback as used — one transaction."""
        if status not in ("promoted", "rejected"):
            raise StoreError(f"status: a round finishes as 'promoted' or 'rejected', not {status!r}")
        with self.store._session() as s:
            rnd = s.get(LoopRound, round_id)
            if rnd is None or rnd.status != "running":
                raise StoreError(f"round: {round_id!r} is not a running round")
            parent_id = s.scalar(select(ModelVersion.id).where(ModelVersion.name == rnd.parent))
            mv = ModelVersion(
                name=candidate["name"],
                path=str(candidate["path"]),
                parent_id=parent_id,
                metrics={**metrics, "round": round_id, "feedback": len(rnd.feedback_ids)},
                status="rejected" if status == "rejected" else "candidate",
            )
            s.add(mv)
            s.flush()
            if status == "promoted":
                self._serve(s, mv)
            s.execute(
                update(Feedback)
                .where(Feedback.id.in_(rnd.feedback_ids), Feedback.round_id.is_(None))
                .values(round_id=round_id)
            )
            rnd.status, rnd.candidate, rnd.metrics, rnd.finished_at = status, mv.name, dict(metrics), utcnow()
            s.commit()
            return as_dict(rnd)

    def rounds(self) -> list[dict[str, Any]]:
        with self.store._session() as s:
            return [as_dict(r) for r in s.scalars(select(LoopRound).order_by(LoopRound.id))]
