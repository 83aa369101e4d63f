"""Label Studio and Argilla interchange: the store's interactions as annotation tasks, and annotated tasks back.

    export_tasks(store, "labelstudio", "tasks.json")   # + tasks.config.xml, the project's labeling config
    export_tasks(store, "argilla", "records.json")     # + records.settings.json, the dataset's Settings
    import_tasks(store, "labelstudio", "export.json")  # annotations back: rewardloop.store.interchange_read

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

import itertools
import json
import os
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from rewardloop.store.models import Feedback, Interaction
from rewardloop.store.store import Store, StoreError, as_dict

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
