"""Export: each format's file loads with rewardloop.data.load_rows (the trainers' reader), the CLI writes it, and a
pairs file is a valid DPO dataset config."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from rewardloop.algorithms.dpo import DPOConfig
from rewardloop.cli import main
from rewardloop.config import load_config
from rewardloop.data import load_rows, read_jsonl
from rewardloop.store import Store, export

CHAT = [{"role": "user", "content": "name a colour"}]


def _fill(store: Store, chat: bool) -> dict[str, str]:
    """Two answers to one prompt (plus one to another prompt) with every kind of feedback; returns the ids."""
    if chat:
        ids = {n: store.log_interaction(messages=CHAT, completion=n, propensity=0.25) for n in ("red", "mud", "blue")}
    else:
        ids = {
            n: store.log_interaction(prompt="colour:", completion=n, propensity=0.25) for n in ("red", "mud", "blue")
        }
    ids["other"] = store.log_interaction(prompt="shape:", completion="round")
    r, m, b, o = ids["red"], ids["mud"], ids["blue"], ids["other"]
    fb = [
        dict(response_id=r, kind="pairwise", value=1, other_response_id=m),  # red > mud
        dict(response_id=m, kind="pairwise", value=0, other_response_id=b),  # blue > mud
        dict(response_id=r, kind="pairwise", value=0.5, other_response_id=b),  # tie: skipped
        dict(response_id=r, kind="pairwise", value=-1, other_response_id=m),  # both bad: skipped
        dict(response_id=r, kind="thumbs", value=1),
        dict(response_id=m, kind="thumbs", value=-1),
        dict(response_id=b, kind="rating", value=4),
        dict(response_id=m, kind="rating", value=5),  # mud also has a thumbs-down: not SFT material
        dict(response_id=b, kind="engagement", event="watch_time", value=30, user_id="u7"),
        dict(response_id=r, kind="comment", comment="fine"),
    ]
    if not chat:  # a preference across prompts teaches nothing: skipped
        fb.append(dict(response_id=r, kind="pairwise", value=1, other_response_id=o))
    store.add_feedback_batch([{**f, "idempotency_key": f"k{i}"} for i, f in enumerate(fb)])
    return ids


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize("chat", [False, True], ids=["text", "chat"])
def test_exports_load_with_the_trainers_reader(store, tmp_path, chat):
    _fill(store, chat)
    c = _assistant if chat else (lambda t: t)
    prompt = CHAT if chat else "colour:"

    summary = export(store, "pairs", tmp_path / "pairs.jsonl")
    assert summary["rows"] == 2
    assert summary["skipped"] == {"tie": 1, "both_bad": 1, **({} if chat else {"different_prompts": 1})}
    raw = read_jsonl(tmp_path / "pairs.jsonl")
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in raw] == [
        (prompt, c("red"), c("mud")),
        (prompt, c("blue"), c("mud")),
    ]
    rows = load_rows(tmp_path / "pairs.jsonl", kind="preference")
    assert len(rows) == 2 and all(r["chosen"] != r["rejected"] for r in rows)
    assert [r["chosen"].strip().endswith(w) for r, w in zip(rows, ("red", "blue"), strict=True)] == [True, True]

    export(store, "kto", tmp_path / "kto.jsonl")
    kto = read_jsonl(tmp_path / "kto.jsonl")
    assert [(r["prompt"], r["completion"], r["label"]) for r in kto] == [
        (prompt, c("red"), True),
        (prompt, c("mud"), False),
    ]
    assert len(load_rows(tmp_path / "kto.jsonl", kind="sft")) == 2  # prompt/completion rows the readers accept

    export(store, "ratings", tmp_path / "ratings.jsonl")
    ratings = load_rows(tmp_path / "ratings.jsonl", kind="rating")  # the reward model's `feedback=ratings` reader
    assert [(r["completion"].strip().split()[-1], r["score"]) for r in ratings] == [("blue", 4.0), ("mud", 5.0)]

    export(store, "sft", tmp_path / "sft.jsonl")
    sft = load_rows(tmp_path / "sft.jsonl", kind="sft")
    assert [r["completion"].strip().split()[-1] for r in sft] == ["red", "blue"]  # not mud (thumbs-down)

    export(store, "engagement", tmp_path / "eng.jsonl")
    (eng,) = read_jsonl(tmp_path / "eng.jsonl")
    assert eng == {
        "response_id": eng["response_id"],
        "prompt": prompt,
        "completion": c("blue"),
        "event": "watch_time",
        "value": 30.0,
        "propensity": 0.25,
        "user_id": "u7",
    }
    assert load_rows(tmp_path / "eng.jsonl", kind="prompt")[0]["event"] == "watch_time"


def test_parquet_export_matches_jsonl(store, tmp_path):
    _fill(store, chat=True)
    for fmt in ("pairs", "sft", "engagement"):
        export(store, fmt, tmp_path / f"{fmt}.jsonl")
        export(store, fmt, tmp_path / f"{fmt}.parquet")
        assert pq.read_table(tmp_path / f"{fmt}.parquet").to_pylist() == read_jsonl(tmp_path / f"{fmt}.jsonl")
    kind = {"pairs": "preference", "sft": "sft"}
    for fmt, k in kind.items():
        assert load_rows(tmp_path / f"{fmt}.parquet", kind=k) == load_rows(tmp_path / f"{fmt}.jsonl", kind=k)


def test_cli_export_and_dpo_reads_it(store_url, tmp_path, capsys):
    with Store.open(store_url) as store:
        _fill(store, chat=False)
    out = tmp_path / "pairs.jsonl"
    assert main(["feedback", "export", "--store", store_url, "--format", "pairs", "--out", str(out)]) == 0
    assert "rows: 2" in capsys.readouterr().out
    assert len(load_rows(out, kind="preference")) == 2
    cfg = load_config(DPOConfig, None, ["task.name=dataset", f"task.path={out}"])
    assert cfg.task.path == str(out)
    # the dotted-override spelling is the same command
    out2 = tmp_path / "sft.parquet"
    assert main(["feedback", f"store.url={store_url}", "format=sft", f"out={out2}"]) == 0
    assert [r["completion"] for r in load_rows(out2, kind="sft")] == ["red", "blue"]


def test_cli_errors_name_the_key(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["feedback", "export", "--store", url, "--format", "dpo", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "format = 'dpo'" in capsys.readouterr().err
    assert main(["feedback", "export", "--store", url]) == 2
    assert "out: required" in capsys.readouterr().err
    assert main(["feedback", "export", "--store", url, "--out", str(tmp_path / "x.csv")]) == 2
    assert "must end in .jsonl or .parquet" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_mixed_chat_and_text_needs_jsonl(store, tmp_path):
    a = store.log_interaction(prompt="p", completion="a")
    b = store.log_interaction(messages=CHAT, completion="b")
    store.add_feedback(response_id=a, kind="thumbs", value=1, idempotency_key="1")
    store.add_feedback(response_id=b, kind="thumbs", value=1, idempotency_key="2")
    with pytest.raises(ValueError, match=r"Write \.jsonl instead"):
        export(store, "sft", tmp_path / "sft.parquet")
    assert not (tmp_path / "sft.parquet").exists()
    export(store, "sft", tmp_path / "sft.jsonl")
    assert [json.loads(x)["completion"] for x in (tmp_path / "sft.jsonl").read_text().splitlines()] == [
        "a",
        _assistant("b"),
    ]
