"""Annotated Label Studio / Argilla files back into the store (the import half of rewardloop.store.interchange).

    import_tasks(store, "labelstudio", "export.json")  # annotations → feedback (and interactions it lacks)

Import is all-or-nothing (one transaction) and idempotent: a label's idempotency key is the one it was exported
with, else ``labelstudio:<task id>:<annotator>:<question>`` (``argilla:<record id>:...``), so importing a file
twice stores everything once. Bad input raises ``InterchangeError`` naming the file, the task index and the field.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from rewardloop.store.interchange import (
    ARGILLA_THUMBS,
    COMMENT_MARK,
    KEY_MARK,
    LS_THUMBS_CHOICES,
    LS_VERDICT_CHOICES,
    RESPONSE_KEYS,
    VERDICT_VALUES,
    InterchangeError,
    Label,
)
from rewardloop.store.models import Feedback, Interaction
from rewardloop.store.store import Store, StoreError, interaction_row, validate_feedback


@dataclass
class ReadTask:
    """One task read from a file, before it touches the store."""

    where: str  # "FILE: tasks[3]" — prefixes every error about this task
    prompt: str
    completions: list[str]  # one (single task) or two (pair task)
    responses: list[dict[str, Any]] | None  # the store's interaction fields when the task was exported from one
    labels: list[Label]


def _fail(where: str, field_: str, message: str) -> InterchangeError:
    return InterchangeError(f"{where}.{field_}: {message}")


def _key(*parts: Any) -> str:
    """An idempotency key from parts; hashed when longer than the store's 200 characters."""
    key = ":".join(str(p) for p in parts)
    return key if len(key) <= 200 else f"{parts[0]}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def _digest(*parts: Any) -> str:
    """16 hex digits naming ``parts``' content: the same text gives the same id in every import."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _texts(data: Any, where: str) -> tuple[str, list[str], list[dict] | None]:
    """prompt, completions and the exported interaction fields of a task's ``data`` / a record's ``fields``."""
    if not isinstance(data, dict):
        raise InterchangeError(f"{where}: expected an object, got {data!r}")
    for name in ("prompt", "response_a"):
        if not isinstance(data.get(name), str):
            raise _fail(where, name, f"expected a string, got {data.get(name)!r}")
    b = data.get("response_b")
    if b is not None and not isinstance(b, str):
        raise _fail(where, "response_b", f"expected a string or null, got {b!r}")
    completions = [data["response_a"], *([b] if b else [])]
    meta = data.get("rewardloop")
    if meta is None:
        return data["prompt"], completions, None
    responses = meta.get("responses") if isinstance(meta, dict) else None
    if (
        not isinstance(responses, list)
        or len(responses) != len(completions)
        or not all(isinstance(r, dict) and isinstance(r.get("id"), str) for r in responses)
    ):
        raise _fail(
            where, "rewardloop.responses", f"expected {len(completions)} objects with an 'id', got {responses!r}"
        )
    return data["prompt"], completions, responses


def _number(value: Any, where: str, field_: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, field_, f"expected a number, got {value!r}")
    return float(value)


def read_labelstudio(path: Path, tasks: Any) -> Iterator[ReadTask]:
    """Label Studio's export JSON (a list of tasks with ``data`` and ``annotations[].result``)."""
    if not isinstance(tasks, list):
        raise InterchangeError(f"{path}: expected a JSON list of Label Studio tasks, got {type(tasks).__name__}")
    for i, task in enumerate(tasks):
        where = f"{path}: tasks[{i}]"
        if not isinstance(task, dict):
            raise InterchangeError(f"{where}: expected a task object, got {task!r}")
        prompt, completions, responses = _texts(task.get("data"), f"{where}.data")
        meta = task["data"].get("rewardloop") or {}
        task_id = task.get("id", meta.get("task") or f"c{_digest(prompt, completions)}")
        annotations = task.get("annotations", [])
        if not isinstance(annotations, list):
            raise _fail(where, "annotations", f"expected a list, got {annotations!r}")
        labels: list[Label] = []
        for j, ann in enumerate(annotations):
            at = f"{where}.annotations[{j}]"
            if not isinstance(ann, dict) or not isinstance(ann.get("result", []), list):
                raise InterchangeError(f"{at}: expected an object with a 'result' list, got {ann!r}")
            if ann.get("was_cancelled"):
                continue
            labels += _ls_labels(ann, at, task_id)
        yield ReadTask(where, prompt, completions, responses, labels)


def _ls_user(ann: dict[str, Any]) -> str | None:
    if "rewardloop_user_id" in ann:
        return ann["rewardloop_user_id"]
    who = ann.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return None if who is None else f"labelstudio:{who}"


def _ls_labels(ann: dict[str, Any], at: str, task_id: Any) -> list[Label]:
    """One annotation's results → labels; a tie / both-bad verdict overrides a left / right pick."""
    user = _ls_user(ann)
    found: dict[str, Label] = {}
    for k, r in enumerate(ann.get("result", [])):
        rat = f"{at}.result[{k}]"
        if not isinstance(r, dict) or not isinstance(r.get("value"), dict):
            raise InterchangeError(f"{rat}: expected an object with a 'value' object, got {r!r}")
        v, kind, rid = r["value"], r.get("type"), r.get("id")
        key = rid[len(KEY_MARK) :] if isinstance(rid, str) and rid.startswith(KEY_MARK) else None
        default = _key("labelstudio", task_id, user or "anonymous", r.get("from_name"))
        if kind == "pairwise":
            if v.get("selected") not in ("left", "right", "none"):
                raise _fail(rat, "value.selected", f"expected 'left' or 'right', got {v.get('selected')!r}")
            if v["selected"] != "none" and "verdict" not in found:
                found["pairwise"] = Label("pairwise", user, float(v["selected"] == "left"), key=key or default)
        elif kind == "choices":
            choices = v.get("choices")
            if not (
                isinstance(choices, list)
                and len(choices) == 1
                and choices[0] in {**LS_VERDICT_CHOICES, **LS_THUMBS_CHOICES}
            ):
                allowed = ", ".join(repr(c) for c in {**LS_VERDICT_CHOICES, **LS_THUMBS_CHOICES})
                raise _fail(rat, "value.choices", f"expected one of {allowed}, got {choices!r}")
            if choices[0] in LS_VERDICT_CHOICES:
                found["pairwise"] = found["verdict"] = Label(
                    "pairwise", user, LS_VERDICT_CHOICES[choices[0]], key=key or default
                )
            else:
                found["thumbs"] = Label("thumbs", user, LS_THUMBS_CHOICES[choices[0]], key=key or default)
        elif kind == "rating":
            found["rating"] = Label("rating", user, _number(v.get("rating"), rat, "value.rating"), key=key or default)
        elif kind == "textarea":
            text = v.get("text")
            if not (isinstance(text, list) and all(isinstance(t, str) for t in text)):
                raise _fail(rat, "value.text", f"expected a list of strings, got {text!r}")
            found["comment"] = Label("comment", user, comment="\n".join(text), key=key or default)
        else:
            raise _fail(rat, "type", f"expected pairwise, choices, rating or textarea, got {kind!r}")
    return [label for name, label in found.items() if name != "verdict"]


def read_argilla(path: Path, records: Any) -> Iterator[ReadTask]:
    """Argilla v2 records (``dataset.records.to_json`` / ``Record.to_dict``: fields, responses by question)."""
    if not isinstance(records, list):
        raise InterchangeError(f"{path}: expected a JSON list (or JSON Lines) of Argilla records")
    for i, rec in enumerate(records):
        where = f"{path}: records[{i}]"
        if not isinstance(rec, dict):
            raise InterchangeError(f"{where}: expected a record object, got {rec!r}")
        fields = rec.get("fields")
        meta = (rec.get("metadata") or {}).get("rewardloop")
        try:
            meta = json.loads(meta) if isinstance(meta, str) else meta or {}
        except json.JSONDecodeError as e:
            raise _fail(where, "metadata.rewardloop", f"not JSON ({e})") from None
        if not isinstance(meta, dict):
            raise _fail(where, "metadata.rewardloop", f"expected a JSON object, got {meta!r}")
        data = {**fields, "rewardloop": meta or None} if isinstance(fields, dict) and meta else fields
        prompt, completions, responses = _texts(data, f"{where}.fields")
        record_id = rec.get("id") or f"c{_digest(prompt, completions)}"
        users, keys = meta.get("users", {}), meta.get("keys", {})
        answers = rec.get("responses") or {}
        if not isinstance(answers, dict):
            raise _fail(where, "responses", f"expected an object of question → responses, got {answers!r}")
        by_user: dict[str, dict[str, Label]] = {}
        for question, items in answers.items():
            if not isinstance(items, list):
                raise _fail(where, f"responses.{question}", f"expected a list, got {items!r}")
            for j, item in enumerate(items):
                at = f"{where}.responses.{question}[{j}]"
                if not isinstance(item, dict) or "value" not in item or not item.get("user_id"):
                    raise InterchangeError(f"{at}: expected an object with 'value' and 'user_id', got {item!r}")
                if item.get("status") in ("draft", "discarded"):
                    continue
                uid = str(item["user_id"])
                user = users.get(uid, f"argilla:{uid}")
                key = keys.get(f"{uid}/{question}") or _key("argilla", record_id, user or "anonymous", question)
                by_user.setdefault(uid, {})[question] = _argilla_label(question, item["value"], user, key, at)
        labels = [label for answered in by_user.values() for label in answered.values()]
        yield ReadTask(where, prompt, completions, responses, labels)


def _argilla_label(question: str, value: Any, user: str | None, key: str, at: str) -> Label:
    if question == "preference":
        if isinstance(value, list):  # a RankingQuestion over the two responses: names best first, or {value, rank}
            ranked = [v.get("value") if isinstance(v, dict) else v for v in value]
            ranks = [v.get("rank") for v in value if isinstance(v, dict)]
            if sorted(ranked) != ["response_a", "response_b"]:
                raise _fail(at, "value", f"a ranking must order 'response_a' and 'response_b', got {value!r}")
            tie = len(ranks) == 2 and ranks[0] == ranks[1]
            return Label("pairwise", user, 0.5 if tie else float(ranked[0] == "response_a"), key=key)
        if value not in VERDICT_VALUES:
            raise _fail(at, "value", f"expected one of {', '.join(map(repr, VERDICT_VALUES))}, got {value!r}")
        return Label("pairwise", user, VERDICT_VALUES[value], key=key)
    if question == "rating":
        return Label("rating", user, _number(value, at, "value"), key=key)
    if question == "thumbs":
        if value not in ARGILLA_THUMBS:
            raise _fail(at, "value", f"expected 'up' or 'down', got {value!r}")
        return Label("thumbs", user, ARGILLA_THUMBS[value], key=key)
    if question == "comment":
        if not isinstance(value, str):
            raise _fail(at, "value", f"expected a string, got {value!r}")
        return Label("comment", user, comment=value, key=key)
    raise InterchangeError(f"{at}: unknown question {question!r}; expected preference, rating, thumbs or comment")


def _rows(task: ReadTask, source: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A read task → validated interaction rows and feedback items (errors name the task and field)."""
    interactions = []
    for j, completion in enumerate(task.completions):
        if task.responses:
            r = task.responses[j]
            fields = {k: r[k] for k in RESPONSE_KEYS if r.get(k) is not None}
            fields.setdefault("model_version", f"import:{source}")
        else:
            fields = {"id": f"imp-{_digest(source, task.prompt, completion)}", "prompt": task.prompt}
            fields["model_version"] = f"import:{source}"
        try:
            interactions.append(interaction_row({**fields, "completion": completion}))
        except StoreError as e:
            raise InterchangeError(f"{task.where}.responses[{j}].{e}") from None
    ids = [it["id"] for it in interactions]
    labels = list(task.labels)
    by_key = {label.key: label for label in labels}
    for label in [x for x in labels if x.kind == "comment" and x.key.endswith(COMMENT_MARK)]:
        owner = by_key.get(label.key.removesuffix(COMMENT_MARK))
        if owner is not None:  # exported as the comment of that label: back onto it
            owner.comment = label.comment
            labels.remove(label)
    if len(ids) == 2:  # a comment on a pair task rides on the same annotator's pairwise label
        pairwise = {label.user: label for label in labels if label.kind == "pairwise"}
        for label in [x for x in labels if x.kind == "comment" and x.user in pairwise]:
            pairwise[label.user].comment = label.comment
            labels.remove(label)
    items = []
    for label in labels:
        item = {"response_id": ids[0], "kind": label.kind, "idempotency_key": label.key, "user_id": label.user}
        if label.kind == "pairwise":
            item["other_response_id"] = ids[1] if len(ids) == 2 else None
        item["value"], item["comment"] = label.value, label.comment
        try:
            items.append(validate_feedback(item))
        except StoreError as e:
            raise InterchangeError(f"{task.where}: {label.kind} label by {label.user!r}: {e}") from None
    return interactions, items


def _load(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InterchangeError(f"{path}: cannot read ({e.strerror})") from None
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InterchangeError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None


READERS: dict[str, Callable[[Path, Any], Iterator[ReadTask]]] = {
    "labelstudio": read_labelstudio,
    "argilla": read_argilla,
}


def import_tasks(store: Store, fmt: str, path: str | os.PathLike) -> dict[str, Any]:
    """Store the labels of a ``fmt`` (labelstudio | argilla) file, with the interactions the store lacks, in one
    transaction; returns counts. Re-importing a file stores nothing new."""
    path = Path(path)
    interactions: dict[str, dict[str, Any]] = {}
    items: dict[str, dict[str, Any]] = {}
    tasks = list(READERS[fmt](path, _load(path)))
    for task in tasks:
        its, fbs = _rows(task, fmt)
        for it in its:
            interactions.setdefault(it["id"], it)
        for fb in fbs:
            items.setdefault(fb["idempotency_key"], fb)
    for _attempt in range(3):  # a concurrent writer of the same keys or ids: the retry sees its rows
        with store._session() as s:
            have = (
                set(s.scalars(select(Interaction.id).where(Interaction.id.in_(interactions))))
                if interactions
                else set()
            )
            stored = (
                set(s.scalars(select(Feedback.idempotency_key).where(Feedback.idempotency_key.in_(items))))
                if items
                else set()
            )
            new_its = [Interaction(**it) for rid, it in interactions.items() if rid not in have]
            new_fbs = [Feedback(**fb) for key, fb in items.items() if key not in stored]
            s.add_all(new_its)
            s.flush()  # interactions before the feedback that references them
            s.add_all(new_fbs)
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                continue
        return {
            "in": str(path),
            "format": fmt,
            "tasks": len(tasks),
            "interactions_created": len(new_its),
            "feedback_created": len(new_fbs),
            "feedback_already_stored": len(items) - len(new_fbs),
        }
    raise StoreError(f"{path}: could not import after 3 attempts (concurrent writes of the same keys)")
