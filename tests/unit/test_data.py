"""rewardloop.data: every source format, TRL column conventions, chat rendering, and errors with file/row/field."""

from __future__ import annotations

import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from rewardloop.data import MAX_ERRORS, DataError, load_rows, read_jsonl, save_jsonl

# <|role|>content<|end|> per message; the generation prompt opens an assistant turn.
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]


def make_tokenizer(chat_template: str | None = TEMPLATE) -> PreTrainedTokenizerFast:
    """Word-level tokenizer: every whitespace/punctuation-separated word is one token (unknown words → <unk>)."""
    vocab = {w: i for i, w in enumerate(["<unk>", *SPECIAL, "hi", "hello", "good", "bad"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIAL)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast


def write_jsonl(path, lines: list) -> str:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return str(path)


def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def error_of(source, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        load_rows(source, **kwargs)
    return info.value


# --- formats ------------------------------------------------------------------------------------------------------


def test_jsonl_prompt_rows_keep_extra_columns(tmp_path):
    path = write_jsonl(
        tmp_path / "rl.jsonl", [{"prompt": "2+2=", "answer": "4"}, "", {"prompt": "3+1=", "answer": "4"}]
    )
    assert load_rows(path, kind="prompt") == [{"prompt": "2+2=", "answer": "4"}, {"prompt": "3+1=", "answer": "4"}]


def test_json_list_sft_and_limit(tmp_path):
    path = tmp_path / "sft.json"
    path.write_text(json.dumps([{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(5)]))
    rows = load_rows(path, kind="sft", limit=2)
    assert rows == [{"prompt": "p0", "completion": "c0"}, {"prompt": "p1", "completion": "c1"}]


def test_json_file_holding_json_lines_is_read_as_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "lines.json", [{"prompt": "a"}, {"prompt": "b"}])
    assert [r["prompt"] for r in load_rows(path, kind="prompt")] == ["a", "b"]


def test_parquet_preference_with_margin(tmp_path):
    path = tmp_path / "prefs.parquet"
    table = pa.Table.from_pylist(
        [
            {"prompt": "q1", "chosen": "good", "rejected": "bad", "margin": 2},
            {"prompt": "q2", "chosen": "yes", "rejected": "no", "margin": None},
        ]
    )
    pq.write_table(table, path)
    rows = load_rows(path, kind="preference")
    assert rows[0] == {"prompt": "q1", "chosen": "good", "rejected": "bad", "margin": 2.0}
    assert rows[1] == {"prompt": "q2", "chosen": "yes", "rejected": "no"}  # null margin = no margin


def test_csv_preference_parses_margin(tmp_path):
    path = tmp_path / "prefs.csv"
    path.write_text("prompt,chosen,rejected,margin\nq,a,b,0.5\nq,c,d,\n")
    assert load_rows(path, kind="preference") == [
        {"prompt": "q", "chosen": "a", "rejected": "b", "margin": 0.5},
        {"prompt": "q", "chosen": "c", "rejected": "d"},
    ]


def test_datasets_object_dict_and_saved_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    data = [{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": "2"}]
    ds = datasets.Dataset.from_list(data)
    assert load_rows(ds, kind="prompt") == data
    assert load_rows(ds, kind="prompt", limit=1) == data[:1]

    dd = datasets.DatasetDict({"train": ds, "test": datasets.Dataset.from_list([{"prompt": "t"}])})
    assert load_rows(dd, kind="prompt", split="test") == [{"prompt": "t"}]
    assert load_rows(dd, kind="prompt") == data  # default split: train

    ds.save_to_disk(str(tmp_path / "saved"))
    assert load_rows(tmp_path / "saved", kind="prompt") == data
    dd.save_to_disk(str(tmp_path / "saved_dict"))
    assert load_rows(tmp_path / "saved_dict", kind="prompt", split="test") == [{"prompt": "t"}]
    assert "no split 'dev'" in str(error_of(tmp_path / "saved_dict", kind="prompt", split="dev"))


@pytest.mark.parametrize(
    ("spec", "split", "expected"),
    [
        ("hf:org/name", None, ("org/name", None, "train")),
        ("hf:org/name", "test", ("org/name", None, "test")),
        ("hf:org/name:validation", None, ("org/name", None, "validation")),
        ("hf:org/name:main:test", None, ("org/name", "main", "test")),
    ],
)
def test_hf_spec_is_passed_to_load_dataset(monkeypatch, spec, split, expected):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(name, config=None, *, split):
        calls.append((name, config, split))
        return datasets.Dataset.from_list([{"prompt": "x"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_rows(spec, kind="prompt", split=split) == [{"prompt": "x"}]
    assert calls == [expected]


def test_hf_spec_errors():
    with pytest.raises(ValueError, match="hf:NAME:CONFIG:SPLIT"):
        load_rows("hf:a:b:c:d", kind="prompt")
    with pytest.raises(ValueError, match="names split 'test' but split='train'"):
        load_rows("hf:a:test", kind="prompt", split="train")


def test_missing_datasets_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'rewardloop\[datasets\]'"):
        load_rows("hf:org/name", kind="prompt")


def test_in_memory_list_and_sft_formats():
    rows = load_rows(
        [
            {"prompt": "p", "completion": "c", "id": 7},
            {"text": "just text"},
            {"messages": [msg("user", "q"), msg("assistant", "a")]},
        ],
        kind="sft",
    )
    assert rows[0] == {"prompt": "p", "completion": "c", "id": 7}
    assert rows[1] == {"prompt": "", "completion": "just text"}
    assert rows[2] == {"prompt": "user: q\nassistant:", "completion": " a\n"}


# --- conversational rendering -------------------------------------------------------------------------------------


def test_fallback_rendering_without_chat_template():
    no_template = make_tokenizer(chat_template=None)
    for tokenizer in (None, no_template):
        rows = load_rows(
            [{"prompt": [msg("system", "be brief"), msg("user", "hi")]}], kind="prompt", tokenizer=tokenizer
        )
        messages = [msg("system", "be brief"), msg("user", "hi")]  # kept: reward functions get them, as in TRL
        assert rows == [{"prompt": "system: be brief\nuser: hi\nassistant:", "prompt_messages": messages}]
    pair = {
        "chosen": [msg("user", "q"), msg("assistant", "good")],
        "rejected": [msg("user", "q"), msg("assistant", "bad")],
    }
    pref = load_rows([pair], kind="preference")
    assert pref == [{"prompt": "user: q\nassistant:", "chosen": " good\n", "rejected": " bad\n"}]


def test_chat_template_renders_prompt_with_generation_prompt():
    rows = load_rows([{"prompt": [msg("user", "hi")], "answer": "x"}], kind="prompt", tokenizer=make_tokenizer())
    assert rows == [{"prompt": "<|user|>hi<|end|><|assistant|>", "prompt_messages": [msg("user", "hi")], "answer": "x"}]


def test_chat_template_sft_prompt_completion_and_messages():
    tok = make_tokenizer()
    convo = [msg("system", "s"), msg("user", "u1"), msg("assistant", "a1"), msg("user", "u2"), msg("assistant", "a2")]
    rows = load_rows(
        [
            {"prompt": [msg("user", "hi")], "completion": [msg("assistant", "hello")]},
            {"messages": convo, "source": "chat"},
        ],
        kind="sft",
        tokenizer=tok,
    )
    assert rows[0] == {"prompt": "<|user|>hi<|end|><|assistant|>", "completion": "hello<|end|>"}
    # Only the trailing assistant turn is the completion; earlier assistant turns are context.
    assert (
        rows[1]["prompt"] == "<|system|>s<|end|><|user|>u1<|end|><|assistant|>a1<|end|><|user|>u2<|end|><|assistant|>"
    )
    assert rows[1]["completion"] == "a2<|end|>"
    assert rows[1]["source"] == "chat"


def test_chat_template_preference_explicit_and_implicit_prompt():
    tok = make_tokenizer()
    explicit = {
        "prompt": [msg("user", "hi")],
        "chosen": [msg("assistant", "good")],
        "rejected": [msg("assistant", "bad")],
        "margin": 1,
    }
    implicit = {
        "chosen": [msg("user", "hi"), msg("assistant", "good")],
        "rejected": [msg("user", "hi"), msg("assistant", "bad")],
    }
    rows = load_rows([explicit, implicit], kind="preference", tokenizer=tok)
    expected = {"prompt": "<|user|>hi<|end|><|assistant|>", "chosen": "good<|end|>", "rejected": "bad<|end|>"}
    assert rows == [expected | {"margin": 1.0}, expected]


def test_template_that_cannot_be_split_is_reported():
    # The generation prompt adds text ("think") that the full conversation does not contain.
    tok = make_tokenizer(TEMPLATE.replace("<|assistant|>{% endif %}", "<|assistant|>think{% endif %}"))
    err = error_of([{"messages": [msg("user", "q"), msg("assistant", "a")]}], kind="sft", tokenizer=tok)
    assert "<list> row 1" in str(err)
    assert "renders the prompt differently" in str(err)


def test_template_exception_is_reported_per_row():
    strict = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('must start with user') }}{% endif %}" + TEMPLATE
    rows = [{"prompt": [msg("user", "ok")]}, {"prompt": [msg("system", "s"), msg("user", "u")]}]
    err = error_of(rows, kind="prompt", tokenizer=make_tokenizer(strict))
    assert err.total == 1
    assert "<list> row 2: the chat template failed" in str(err) and "must start with user" in str(err)


# --- errors -------------------------------------------------------------------------------------------------------


def test_missing_column_wrong_type_and_empty_are_all_reported(tmp_path):
    path = write_jsonl(
        tmp_path / "rl.jsonl",
        [{"prompt": "ok"}, {"question": "where?"}, {"prompt": 42}, {"prompt": "   "}, {"prompt": [msg("user", 3)]}],
    )
    err = error_of(path, kind="prompt")
    text = str(err)
    assert err.total == 4
    assert f"{path} line 2: missing column 'prompt' (row has: question)" in text
    assert f"{path} line 3: field 'prompt'" in text and "int 42" in text
    assert f"{path} line 4: field 'prompt': empty" in text
    assert f"{path} line 5: field 'prompt[0].content': expected a string, got int 3" in text


def test_invalid_json_line_names_line_number_and_other_errors_still_reported(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a"}, '{"prompt": "b",', "[1, 2]", {"prompt": ""}])
    text = str(error_of(path, kind="prompt"))
    assert f"{path} line 2: invalid JSON" in text and '{"prompt": "b",' in text
    assert f"{path} line 3: expected an object with named columns, got list [1, 2]" in text
    assert f"{path} line 4: field 'prompt': empty" in text


def test_sft_errors(tmp_path):
    path = tmp_path / "sft.json"
    rows = [
        {"prompt": "p", "completion": ""},
        {"prompt": "p"},
        {"messages": [msg("assistant", "a"), msg("user", "u")]},
        {"prompt": [msg("user", "u")], "completion": "plain"},
    ]
    path.write_text(json.dumps(rows))
    text = str(error_of(path, kind="sft"))
    assert f"{path} row 1: field 'completion': empty" in text
    assert (
        f"{path} row 2: missing columns: need 'prompt' + 'completion', 'messages' or 'text' (row has: prompt)" in text
    )
    assert f"{path} row 3: field 'messages': the last turn is 'user'" in text
    assert f"{path} row 4: fields 'prompt', 'completion': mixed plain-text and conversational" in text


def test_preference_errors(tmp_path):
    path = write_jsonl(
        tmp_path / "prefs.jsonl",
        [
            {"prompt": "q", "chosen": "same answer", "rejected": "same answer"},
            {"prompt": "q", "chosen": "a", "rejected": "b", "margin": "big"},
            {"chosen": "a", "rejected": "b"},
            {"prompt": "q", "chosen": "a"},
            {
                "chosen": [msg("user", "x"), msg("assistant", "a")],
                "rejected": [msg("user", "y"), msg("assistant", "b")],
            },
        ],
    )
    text = str(error_of(path, kind="preference"))
    assert f"{path} line 1: fields 'chosen' and 'rejected' are identical (str 'same answer')" in text
    assert f"{path} line 2: field 'margin': expected a finite number, got str 'big'" in text
    assert f"{path} line 3: missing column 'prompt'" in text
    assert f"{path} line 4: missing column 'rejected'" in text
    assert f"{path} line 5: fields 'chosen', 'rejected': no 'prompt' column and no shared first message" in text


# --- feedback kinds: kto (thumbs), rating, engagement ---------------------------------------------------------------


def test_kto_rows_plain_conversational_csv_and_parquet(tmp_path):
    rows = load_rows([{"prompt": "1+1=", "completion": "2", "label": True, "response_id": "r1"}], kind="kto")
    assert rows == [{"prompt": "1+1=", "completion": "2", "label": True, "response_id": "r1"}]
    chat = [{"prompt": [msg("user", "hi")], "completion": [msg("assistant", "yo")], "label": False}]
    assert load_rows(chat, kind="kto") == [{"prompt": "user: hi\nassistant:", "completion": " yo\n", "label": False}]
    csv = tmp_path / "thumbs.csv"
    csv.write_text("prompt,completion,label\na,b,true\nc,d,FALSE\n")
    assert [r["label"] for r in load_rows(csv, kind="kto")] == [True, False]
    pq.write_table(pa.Table.from_pylist([{"prompt": "a", "completion": "b", "label": False}]), tmp_path / "t.parquet")
    assert load_rows(tmp_path / "t.parquet", kind="kto")[0]["label"] is False


def test_kto_errors_name_file_line_and_field(tmp_path):
    path = write_jsonl(
        tmp_path / "thumbs.jsonl",
        [
            {"prompt": "q", "completion": "a", "label": 1},
            {"prompt": "q", "completion": "a", "label": "true"},
            {"prompt": "q", "completion": "a"},
            {"prompt": "q", "label": True},
            {"prompt": "q", "completion": "a", "label": None},
        ],
    )
    text = str(error_of(path, kind="kto"))
    assert f"{path} line 1: field 'label': expected a bool (true / false), got int 1" in text
    assert f"{path} line 2: field 'label': expected a bool (true / false), got str 'true'" in text
    assert f"{path} line 3: missing column 'label'" in text
    assert f"{path} line 4: missing column 'completion'" in text
    assert f"{path} line 5: field 'label': expected a bool (true / false), got NoneType None" in text
    csv = tmp_path / "thumbs.csv"
    csv.write_text("prompt,completion,label\na,b,yes\n")
    assert f"{csv} line 2: field 'label': expected a bool (true / false), got str 'yes'" in str(
        error_of(csv, kind="kto")
    )
    pq.write_table(pa.Table.from_pylist([{"prompt": "a", "completion": "b"}]), tmp_path / "x.parquet")
    assert "kind='kto' needs column(s) 'completion' + 'label' + 'prompt'" in str(
        error_of(tmp_path / "x.parquet", kind="kto")
    )


def test_kto_max_length_counts_prompt_and_completion():
    tok = make_tokenizer(None)
    err = error_of([{"prompt": "a b c", "completion": "d e f", "label": True}], kind="kto", tokenizer=tok, max_length=4)
    assert "prompt+completion is 6 tokens, longer than max_length=4" in str(err)


def test_rating_rows_and_errors(tmp_path):
    assert load_rows([{"prompt": "p", "completion": "c", "score": 4}], kind="rating")[0]["score"] == 4.0
    csv = tmp_path / "ratings.csv"
    csv.write_text("prompt,completion,score\np,c,3.5\np,c,great\np,c,\n")
    assert load_rows(str(csv), kind="rating", limit=1)[0]["score"] == 3.5
    text = str(error_of(csv, kind="rating"))
    assert f"{csv} line 3: field 'score': expected a finite number, got str 'great'" in text
    assert f"{csv} line 4: field 'score': expected a finite number, got str ''" in text
    text = str(
        error_of([{"prompt": "p", "completion": "c", "score": True}, {"prompt": "p", "completion": "c"}], kind="rating")
    )
    assert "<list> row 1: field 'score': expected a finite number, got bool True" in text
    assert "<list> row 2: missing column 'score'" in text


def test_engagement_rows_and_errors(tmp_path):
    row = {"response_id": "r", "prompt": "p", "completion": "c", "event": "watch_time", "value": 42, "propensity": 0.25}
    assert load_rows([row, row | {"propensity": None}], kind="engagement")[1]["propensity"] is None
    csv = tmp_path / "engagement.csv"
    csv.write_text("prompt,completion,event,value,propensity\np,c,click,1,\np,c,click,1,0.5\n")
    assert [r["propensity"] for r in load_rows(csv, kind="engagement")] == [None, 0.5]
    bad = [row | {"propensity": 0.0}, row | {"propensity": 1.5}, row | {"event": ""}, row | {"value": "x"}]
    text = str(error_of(bad, kind="engagement"))
    assert "<list> row 1: field 'propensity': expected a probability in (0, 1], got float 0.0" in text
    assert "<list> row 2: field 'propensity': expected a probability in (0, 1], got float 1.5" in text
    assert "<list> row 3: field 'event': expected a non-empty event name, got str ''" in text
    assert "<list> row 4: field 'value': expected a finite number, got str 'x'" in text


def test_columnar_source_missing_column_is_one_error(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": "q", "answer": "a"}] * 100), path)
    err = error_of(path, kind="sft")
    assert str(err).startswith(f"{path}: kind='sft' needs column(s)")
    assert "'completion' + 'prompt'" in str(err) and "['question', 'answer']" in str(err)


def test_error_count_is_capped_with_a_total(tmp_path):
    path = write_jsonl(tmp_path / "many.jsonl", [{"prompt": i} for i in range(MAX_ERRORS + 5)])
    err = error_of(path, kind="prompt")
    assert err.total == MAX_ERRORS + 5 and len(err.errors) == MAX_ERRORS
    assert "... and 5 more" in str(err)
    assert f"{path} line {MAX_ERRORS}:" in str(err) and f"line {MAX_ERRORS + 1}:" not in str(err)


def test_long_values_are_truncated_in_messages():
    text = str(error_of([{"prompt": "p", "chosen": "x" * 500, "rejected": "x" * 500}], kind="preference"))
    assert "x" * 60 in text and "x" * 200 not in text and "…" in text


def test_max_length_with_tokenizer():
    tok = make_tokenizer(chat_template=None)
    rows = [
        {"prompt": "one two three", "completion": "four five"},  # 5 word tokens
        {"prompt": "one two three", "completion": "four five six seven"},  # 7
    ]
    assert len(load_rows(rows, kind="sft", tokenizer=tok, max_length=7)) == 2
    err = error_of(rows, kind="sft", tokenizer=tok, max_length=6)
    assert err.total == 1
    assert "<list> row 2: prompt+completion is 7 tokens, longer than max_length=6" in str(err)
    pair = [{"prompt": "a b", "chosen": "c", "rejected": "d e f"}]
    assert "prompt+rejected is 5 tokens" in str(error_of(pair, kind="preference", tokenizer=tok, max_length=4))
    assert "prompt is 3 tokens" in str(error_of([{"prompt": "a b c"}], kind="prompt", tokenizer=tok, max_length=2))


def test_max_length_counts_rendered_chat_tokens():
    # Rendered: <|user|> hi <|end|> <|assistant|> | hello <|end|> = 4 prompt + 2 completion tokens.
    row = {"prompt": [msg("user", "hi")], "completion": [msg("assistant", "hello")]}
    tok = make_tokenizer()
    assert load_rows([row], kind="sft", tokenizer=tok, max_length=6)
    assert "prompt+completion is 6 tokens" in str(error_of([row], kind="sft", tokenizer=tok, max_length=5))


def test_empty_dataset_and_bad_arguments(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert str(error_of(empty, kind="prompt")) == f"{empty}: no rows (the dataset is empty)"
    assert "no rows" in str(error_of([], kind="sft"))
    with pytest.raises(ValueError, match="needs a tokenizer"):
        load_rows([{"prompt": "a"}], kind="prompt", max_length=8)
    with pytest.raises(ValueError, match="kind='rl'"):
        load_rows([{"prompt": "a"}], kind="rl")
    with pytest.raises(ValueError, match="applies only to Hugging Face"):
        load_rows(str(empty), kind="prompt", split="train")
    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl"):
        load_rows(tmp_path / "missing.jsonl", kind="prompt")
    (tmp_path / "data.txt").write_text("x")
    assert "unknown format '.txt'" in str(error_of(tmp_path / "data.txt", kind="prompt"))


# --- read_jsonl / save_jsonl --------------------------------------------------------------------------------------


def test_save_and_read_jsonl_round_trip(tmp_path):
    rows = [{"prompt": "héllo", "n": 1}, {"prompt": "b", "tags": ["x", "y"]}]
    path = tmp_path / "sub" / "out.jsonl"
    save_jsonl(rows, path)
    assert read_jsonl(path) == rows
    assert "héllo" in path.read_text(encoding="utf-8")  # not \\u-escaped
    assert [p.name for p in path.parent.iterdir()] == ["out.jsonl"]  # no temporary file left
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600


def test_save_jsonl_failure_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.jsonl"
    save_jsonl([{"a": 1}], path)
    with pytest.raises(DataError, match="row 2: cannot be written as JSON"):
        save_jsonl([{"a": 2}, {"a": object()}], path)
    with pytest.raises(DataError, match="row 1"):
        save_jsonl([{"a": float("nan")}], path)
    assert read_jsonl(path) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_read_jsonl_reports_bad_lines(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"a": 1}, "not json", "3"])
    with pytest.raises(DataError) as info:
        read_jsonl(path)
    text = str(info.value)
    assert f"{path} line 2: invalid JSON" in text and f"{path} line 3: expected a JSON object, got int 3" in text
