"""Label Studio and Argilla interchange: the store's interactions as annotation tasks, and annotated tasks back.

    export_tasks(store, "labelstudio", "tasks.json")   # + tasks.config.xml, the project's labeling config
    export_tasks(store, "argilla", "records.json")     # + records.settings.json, the dataset's Settings
    import_tasks(store, "labelstudio", "export.json")  # annotations → feedback (and interactions it lacks)

A **pair task** shows a prompt and two responses to it (``response_a``, ``response_b``) and carries pairwise labels;
a **single task** shows one response (``response_a``, ``response_b`` empty) and carries rating, thumbs and comment
labels. Pair tasks are every pair that already has a pairwise label, plus neighbouring responses to the same prompt
(two model versions or two samples) that have none yet. A pairwise ``value`` maps to a verdict: 1 = ``a`` better,
0 = ``b`` better, 0.5 = tie, -1 = both bad (models.PAIRWISE_VALUES).

Import is all-or-nothing (one transaction) and idempotent: a label's idempotency key is the one it was exported
with, else ``labelstudio:<task id>:<annotator>:<question>`` (``argilla:<record id>:...``), so importing a file
twice stores everything once. Responses the store does not hold become interactions (model_version
``import:labelstudio`` / ``import:argilla`` unless the task names one). Bad input raises ``InterchangeError``
naming the file, the task index and the field. See docs/guides/feedback.md.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from rewardloop.store.models import Feedback, Interaction
from rewardloop.store.store import Store, StoreError, as_dict, interaction_row, validate_feedback

LABEL_KINDS = ("pairwise", "rating", "thumbs", "comment")
VERDICTS = {1.0: "a", 0.0: "b", 0.5: "tie", -1.0: "both_bad"}  # pairwise value → verdict
VERDICT_VALUES = {v: k for k, v in VERDICTS.items()}
RESPONSE_KEYS = ("id", "model_version", "kind", "prompt", "messages")  # what a task keeps of each interaction
USER_NAMESPACE = uuid.UUID("6f1d2a8e-6b51-4d0c-9c7a-2f3b7d9e4a10")  # annotator name → Argilla user UUID


class InterchangeError(StoreError):
    """A task file cannot be imported; the message names the file, the task index and the field."""


@dataclass
class Label:
    kind: str  # pairwise | rating | thumbs | comment
    user: str | None
    value: float | None = None
    comment: str | None = None
    key: str | None = None  # the idempotency key it was stored with (export), or None (a new label)


@dataclass
class Task:
    key: str  # "pair:<a>:<b>" or "single:<a>"
    responses: list[dict[str, Any]]  # one or two interactions (RESPONSE_KEYS + completion)
    labels: list[Label] = field(default_factory=list)


# -- the store → tasks -------------------------------------------------------------------------------------------


def _prompt_id(it: dict[str, Any]) -> str:
    return json.dumps([it["kind"], it["messages"] if it["kind"] == "chat" else it["prompt"]], sort_keys=True)


def prompt_text(it: dict[str, Any]) -> str:
    """What an annotator reads as the prompt: the text, or a chat's messages as ``role: content`` lines."""
    if it["kind"] != "chat":
        return it["prompt"]
    return "\n\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in it["messages"])


def store_tasks(store: Store) -> list[Task]:
    """Every labelled pair, unlabelled neighbouring pairs of responses to one prompt, and every response as a
    single task, with the store's pairwise / rating / thumbs / comment feedback as labels."""
    with store._session() as s:
        its = {
            i.id: as_dict(i) for i in s.scalars(select(Interaction).order_by(Interaction.created_at, Interaction.id))
        }
        fbs = [
            as_dict(f) for f in s.scalars(select(Feedback).where(Feedback.kind.in_(LABEL_KINDS)).order_by(Feedback.id))
        ]
    pairs: dict[tuple[str, str], Task] = {}
    singles = {rid: Task(f"single:{rid}", [it]) for rid, it in its.items()}
    for fb in fbs:
        label = Label(fb["kind"], fb["user_id"], fb["value"], fb["comment"], fb["idempotency_key"])
        if fb["kind"] != "pairwise":
            singles[fb["response_id"]].labels.append(label)
            continue
        a, b = fb["response_id"], fb["other_response_id"]
        if (b, a) in pairs:  # the pair is already a task the other way round: flip the verdict
            a, b = b, a
            label.value = {1.0: 0.0, 0.0: 1.0}.get(label.value, label.value)
        task = pairs.setdefault((a, b), Task(f"pair:{a}:{b}", [its[a], its[b]]))
        task.labels.append(label)
    by_prompt: dict[str, list[str]] = {}
    for rid, it in its.items():
        by_prompt.setdefault(_prompt_id(it), []).append(rid)
    for rids in by_prompt.values():
        for a, b in itertools.pairwise(rids):
            if (a, b) not in pairs and (b, a) not in pairs:
                pairs[a, b] = Task(f"pair:{a}:{b}", [its[a], its[b]])
    return [*pairs.values(), *singles.values()]


def _questions(label: Label) -> set[str]:
    """The answers a label fills in an annotation: its kind, and the comment box when it carries a comment."""
    return {label.kind, "comment"} if label.comment else {label.kind}


def _by_user(labels: list[Label]) -> list[tuple[str | None, list[Label]]]:
    """Labels grouped into annotations, one per annotator; a label whose answer the annotator's annotation already
    holds (a second rating of one response, say) starts another annotation, as one holds one answer per question."""
    groups: list[tuple[str | None, list[Label]]] = []
    for label in labels:
        group = next(
            (g for u, g in groups if u == label.user and not _questions(label) & set().union(*map(_questions, g))),
            None,
        )
        if group is None:
            groups.append((label.user, group := []))
        group.append(label)
    return groups


def _task_data(task: Task) -> dict[str, Any]:
    a = task.responses[0]
    b = task.responses[1] if len(task.responses) > 1 else None
    return {
        "prompt": prompt_text(a),
        "response_a": a["completion"],
        "response_b": b["completion"] if b else "",
        "rewardloop": {"task": task.key, "responses": [{k: r[k] for k in RESPONSE_KEYS} for r in task.responses]},
    }


# -- Label Studio ------------------------------------------------------------------------------------------------

LS_CONFIG = """<View>
  <Header value="Prompt"/>
  <Text name="prompt" value="$prompt"/>
  <Header value="Response A"/>
  <Text name="response_a" value="$response_a"/>
  <Header value="Response B (pair tasks)"/>
  <Text name="response_b" value="$response_b"/>
  <Header value="Pair tasks: which response is better? (or tie / both bad)"/>
  <Pairwise name="preference" toName="response_a,response_b"/>
  <Choices name="verdict" toName="prompt" choice="single">
    <Choice value="Tie"/>
    <Choice value="Both bad"/>
  </Choices>
  <Header value="Single tasks: rate response A"/>
  <Rating name="rating" toName="response_a" maxRating="5"/>
  <Choices name="thumbs" toName="response_a" choice="single">
    <Choice value="Good"/>
    <Choice value="Bad"/>
  </Choices>
  <TextArea name="comment" toName="prompt" placeholder="Comment (optional)"/>
</View>
"""
LS_VERDICT_CHOICES = {"Tie": 0.5, "Both bad": -1.0}
LS_THUMBS_CHOICES = {"Good": 1.0, "Bad": -1.0}
KEY_MARK = "rl="  # a result id "rl=<key>": the label was exported from a store with this idempotency key
COMMENT_MARK = "#comment"  # "<key>#comment": the comment of the label stored with <key>


def _ls_results(label: Label) -> list[dict[str, Any]]:
    """One store label → Label Studio result items (a pairwise label's comment is a second item)."""
    mark = {"id": f"{KEY_MARK}{label.key}"} if label.key else {}
    if label.kind == "pairwise" and label.value in (1.0, 0.0):
        name, to, kind, value = "preference", "preference", "pairwise", {"selected": "left" if label.value else "right"}
    elif label.kind == "pairwise":
        verdict = {v: k for k, v in LS_VERDICT_CHOICES.items()}[label.value]
        name, to, kind, value = "verdict", "prompt", "choices", {"choices": [verdict]}
    elif label.kind == "rating":
        rating = int(label.value) if label.value.is_integer() else label.value
        name, to, kind, value = "rating", "response_a", "rating", {"rating": rating}
    elif label.kind == "thumbs":
        thumbs = {v: k for k, v in LS_THUMBS_CHOICES.items()}[label.value]
        name, to, kind, value = "thumbs", "response_a", "choices", {"choices": [thumbs]}
    else:  # a comment
        return [
            {
                **mark,
                "from_name": "comment",
                "to_name": "prompt",
                "type": "textarea",
                "value": {"text": [label.comment]},
            }
        ]
    out = [{**mark, "from_name": name, "to_name": to, "type": kind, "value": value}]
    if label.comment:
        note = {"id": f"{KEY_MARK}{label.key}{COMMENT_MARK}"} if label.key else {}
        out.append(
            {
                **note,
                "from_name": "comment",
                "to_name": "prompt",
                "type": "textarea",
                "value": {"text": [label.comment]},
            }
        )
    return out


def labelstudio_tasks(tasks: list[Task]) -> list[dict[str, Any]]:
    """Label Studio's task-import JSON: ``data`` for the labeling config, existing labels as ``annotations``
    (one per annotator; the annotator's name in ``rewardloop_user_id``, which Label Studio ignores)."""
    return [
        {
            "data": _task_data(task),
            "annotations": [
                {"result": [r for label in labels for r in _ls_results(label)], "rewardloop_user_id": user}
                for user, labels in _by_user(task.labels)
            ],
        }
        for task in tasks
    ]


# -- Argilla (v2 SDK: rg.Settings.from_json, rg.Record.from_dict / dataset.records.log) ----------------------------

ARGILLA_VERDICT_TEXT = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both bad"}
ARGILLA_THUMBS = {"up": 1.0, "down": -1.0}


def _question(name: str, title: str, settings: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "title": title, "description": None, "required": False, "settings": settings}


def _text_field(name: str, title: str, required: bool) -> dict[str, Any]:
    return {"name": name, "title": title, "required": required, "settings": {"type": "text", "use_markdown": False}}


ARGILLA_SETTINGS: dict[str, Any] = {
    "guidelines": "Pair records: which response is better (or tie / both bad). Single records (no response B): "
    "rate response A, thumbs up or down. A comment is optional.",
    "fields": [
        _text_field("prompt", "Prompt", True),
        _text_field("response_a", "Response A", True),
        _text_field("response_b", "Response B", False),
    ],
    "questions": [
        _question(
            "preference",
            "Which response is better?",
            {"type": "label_selection", "options": [{"value": k, "text": t} for k, t in ARGILLA_VERDICT_TEXT.items()]},
        ),
        _question("rating", "Rate response A", {"type": "rating", "options": [{"value": v} for v in range(1, 6)]}),
        _question(
            "thumbs",
            "Is response A good?",
            {"type": "label_selection", "options": [{"value": "up", "text": "Good"}, {"value": "down", "text": "Bad"}]},
        ),
        _question("comment", "Comment", {"type": "text", "use_markdown": False}),
    ],
    "vectors": [],
    "metadata": [],
    "allow_extra_metadata": True,  # the "rewardloop" metadata: response ids, annotator names, exported keys
}


def argilla_user(name: str | None) -> str:
    """An annotator's Argilla user id: the name itself when it is a UUID, else a UUID derived from it."""
    name = name or "anonymous"
    try:
        return str(uuid.UUID(name))
    except ValueError:
        return str(uuid.uuid5(USER_NAMESPACE, name))


def _argilla_answer(label: Label) -> list[tuple[str, Any]]:
    if label.kind == "pairwise":
        out = [("preference", VERDICTS[label.value])]
    elif label.kind == "rating":
        out = [("rating", int(label.value))]
    elif label.kind == "thumbs":
        out = [("thumbs", "up" if label.value > 0 else "down")]
    else:
        out = []
    return [*out, ("comment", label.comment)] if label.comment else out


def argilla_records(tasks: list[Task]) -> list[dict[str, Any]]:
    """Argilla v2 records as ``Record.to_dict`` writes them (``dataset.records.to_json``): fields, responses by
    question (``{"value", "user_id"}``), metadata."""
    out = []
    for task in tasks:
        rounds: list[list[Label]] = [[]]  # an annotator answers a question once per record: extra answers → copies
        seen: Counter = Counter()
        for user, labels in _by_user(task.labels):
            k, seen[user] = seen[user], seen[user] + 1
            rounds += [[] for _ in range(k + 1 - len(rounds))]
            rounds[k] += labels
        for k, labels in enumerate(rounds):
            out.append(_argilla_record(task, labels, task.key if k == 0 else f"{task.key}#{k + 1}"))
    return out


def _argilla_record(task: Task, labels: list[Label], record_id: str) -> dict[str, Any]:
    data = _task_data(task)
    responses: dict[str, list[dict[str, Any]]] = {}
    users, keys = {}, {}
    for label in labels:
        uid = argilla_user(label.user)
        users[uid] = label.user
        answers = _argilla_answer(label)
        for question, value in answers:
            responses.setdefault(question, []).append({"value": value, "user_id": uid, "status": "submitted"})
        if label.key:
            keys[f"{uid}/{answers[0][0]}"] = label.key
            if label.comment and label.kind != "comment":
                keys[f"{uid}/comment"] = f"{label.key}{COMMENT_MARK}"  # the comment rides on the label
    meta = {**data.pop("rewardloop"), "users": users, "keys": keys}
    return {
        "id": record_id,
        "fields": {**data, "response_b": data["response_b"] or None},
        "metadata": {"rewardloop": json.dumps(meta, ensure_ascii=False)},
        "suggestions": {},
        "responses": responses,
        "vectors": {},
        "_server_id": None,
    }


# -- writing files -----------------------------------------------------------------------------------------------


def _write_text(path: Path, text: str) -> None:
    """``text`` to ``path`` atomically (a temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def companion(out: str | os.PathLike, fmt: str) -> Path:
    """The file written beside the tasks: Label Studio's labeling config, or Argilla's dataset settings."""
    path = Path(out)
    return path.with_name(path.stem + (".config.xml" if fmt == "labelstudio" else ".settings.json"))


def export_tasks(store: Store, fmt: str, out: str | os.PathLike) -> dict[str, Any]:
    """Write the store as ``fmt`` (labelstudio | argilla) tasks to ``out`` plus its companion file; returns counts."""
    path = Path(out)
    allowed = (".json",) if fmt == "labelstudio" else (".json", ".jsonl")
    if path.suffix not in allowed:
        raise ValueError(f"out: {str(out)!r} must end in {' or '.join(allowed)} for format={fmt}")
    tasks = store_tasks(store)
    if fmt == "labelstudio":
        rows, side = labelstudio_tasks(tasks), LS_CONFIG
    else:
        rows, side = argilla_records(tasks), json.dumps(ARGILLA_SETTINGS, indent=1) + "\n"
    if path.suffix == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    else:
        text = json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
    _write_text(companion(path, fmt), side)
    _write_text(path, text)
    return {
        "out": str(path),
        "format": fmt,
        "companion": str(companion(path, fmt)),
        "rows": len(rows),  # tasks / records written (Argilla: one copy more per extra answer to one question)
        "pair_tasks": sum(len(t.responses) == 2 for t in tasks),
        "single_tasks": sum(len(t.responses) == 1 for t in tasks),
        "labels": sum(len(t.labels) for t in tasks),
    }


# -- files → the store -------------------------------------------------------------------------------------------


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
