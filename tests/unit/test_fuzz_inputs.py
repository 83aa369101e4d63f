"""Property-based fuzzing of dataset loading and reward plug-ins (issue 15, item 6): every case ends in success or in
an error the CLI turns into exit 2 with a message naming the file / row / field or the plug-in — never a traceback,
never a silently accepted row without its required columns.

``load_rows``: random JSONL / JSON / CSV files and in-memory lists (missing columns, wrong types, unicode, huge rows,
junk lines, arbitrary bytes) for every kind → rows, or ``DataError`` naming the source and a row or field.
``resolve_reward``: random specs, missing / broken / raising plug-in files and modules → a callable, or
``ValueError`` / ``FileNotFoundError`` naming the spec. ``score_completions``: random reward return values → scores,
or ``RewardError`` naming the function.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import math
import re
import sys

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from rewardloop.data import DataError, load_rows
from rewardloop.rewards.registry import resolve_reward
from rewardloop.rewards.scoring import RewardError, ScoredBatch, score_completions

KINDS = ("prompt", "sft", "preference")
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ---------------------------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------------------------

_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)  # any unicode but lone surrogates
_WORD = st.text(st.characters(blacklist_categories=("Cs", "Z", "C")), min_size=1, max_size=12)
_HUGE = st.tuples(st.integers(1_000, 150_000), st.sampled_from("xé中😀 \n")).map(lambda t: t[1] * t[0])
_NUMBER = st.one_of(st.integers(-(10**6), 10**6), st.floats(), st.booleans(), st.just(10**400))
_SCALAR = st.one_of(_TEXT, _NUMBER, st.none())
_MESSAGE = st.fixed_dictionaries(
    {
        "role": st.one_of(st.sampled_from(["user", "assistant", "system", ""]), _SCALAR),
        "content": st.one_of(_WORD, _SCALAR),
    }
)
_MESSAGES = st.lists(st.one_of(_MESSAGE, _MESSAGE, _SCALAR), max_size=4)
_VALUE = st.one_of(
    _WORD,
    _TEXT,
    _HUGE,
    _NUMBER,
    st.none(),
    _MESSAGES,
    st.lists(_SCALAR, max_size=3),
    st.dictionaries(_TEXT, _SCALAR, max_size=3),
)
_COLUMN = st.one_of(
    st.sampled_from(["prompt", "completion", "chosen", "rejected", "messages", "text", "margin", "answer"]), _TEXT
)
_RANDOM_ROW = st.dictionaries(_COLUMN, _VALUE, max_size=6)
# Rows that are often valid, so the success path is exercised too: every required column as text, plus noise.
_PLAUSIBLE_ROW = st.builds(
    lambda base, extra: {**extra, **base},
    st.fixed_dictionaries(
        {"prompt": _WORD, "completion": _WORD, "chosen": _WORD, "rejected": _WORD},
        optional={"margin": _NUMBER, "answer": _VALUE},
    ),
    st.dictionaries(_TEXT, _SCALAR, max_size=2),
)
_ROW = st.one_of(_RANDOM_ROW, _PLAUSIBLE_ROW, _PLAUSIBLE_ROW)
_ROWS = st.lists(_ROW, max_size=5)
_JUNK_LINE = st.one_of(
    st.sampled_from(["", "   ", "not json", "[1, 2]", '"a string"', "3", "null", "{", '{"prompt": }', "\ufeff{}"]),
    st.integers(1, 3_000).map(lambda n: "[" * n),  # deep nesting (RecursionError in the decoder)
    st.integers(4_000, 6_000).map(lambda n: '{"prompt": ' + "7" * n + "}"),  # int beyond the str→int digit limit
    _TEXT,
)


# ---------------------------------------------------------------------------------------------------------------
# The property: rows that really hold the required columns, or a DataError naming the source and a row or field
# ---------------------------------------------------------------------------------------------------------------

_WHERE = re.compile(
    r"\b(line|row) \d+\b|column|field|no rows|expected a JSON list|not valid UTF-8|invalid JSON|not a readable"
)


def _text_or_list(value) -> bool:
    return isinstance(value, str | list | tuple)


def _finite_number(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _must_fail(row, kind: str) -> bool:
    """True when ``row`` (as the loader sees it) certainly lacks a required column or has one of a wrong type."""
    if not isinstance(row, dict):
        return True

    def bad(name: str) -> bool:
        v = row.get(name)
        return not _text_or_list(v) or (isinstance(v, str) and not v.strip())

    if kind == "prompt":
        return bad("prompt")
    if kind == "sft":
        if "prompt" in row and "completion" in row:
            return bad("prompt") or bad("completion")
        if "messages" in row:
            return not isinstance(row["messages"], list | tuple)
        return bad("text")
    if bad("chosen") or bad("rejected") or ("prompt" in row and bad("prompt")):
        return True
    if row.get("margin") is not None and not _finite_number(row["margin"]):
        return True
    return isinstance(row["chosen"], str) and ("prompt" not in row or row["chosen"] == row["rejected"])


def _check(source, kind: str, name: str, expected: list | None = None) -> list[dict] | None:
    """``load_rows`` returns valid rows (all of ``expected``, when given) or raises a DataError naming the source."""
    try:
        rows = load_rows(source, kind=kind)
    except DataError as e:  # exit 2 in the CLI (a ValueError)
        message = str(e)
        assert name in message, message
        assert _WHERE.search(message), message
        event("DataError")
        return None
    assert isinstance(rows, list) and rows
    event("loaded")
    required = {"prompt": ["prompt"], "sft": ["prompt", "completion"], "preference": ["prompt", "chosen", "rejected"]}
    for row in rows:
        for field in required[kind]:
            assert isinstance(row[field], str), (field, row)
        if kind == "preference":
            assert row["chosen"] != row["rejected"], row
            assert "margin" not in row or math.isfinite(row["margin"]), row
    if expected is not None:
        assert len(rows) == len(expected), "a row was dropped silently"
        silently_accepted = [r for r in expected if _must_fail(r, kind)]
        assert not silently_accepted, f"accepted rows without valid required columns: {silently_accepted!r:.300}"
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Dataset loading
# ---------------------------------------------------------------------------------------------------------------


@FUZZ
@given(rows=_ROWS, kind=st.sampled_from(KINDS), ascii_only=st.booleans())
def test_fuzz_jsonl_rows_load_or_raise_data_error(tmp_path, rows, kind, ascii_only):
    path = tmp_path / "fuzz.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=ascii_only) + "\n" for r in rows), encoding="utf-8")
    _check(str(path), kind, str(path), expected=rows)


@FUZZ
@given(
    lines=st.lists(st.one_of(_ROW.map(json.dumps), _JUNK_LINE), max_size=6),
    kind=st.sampled_from(KINDS),
    prefix=st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\x00"]),
)
def test_fuzz_jsonl_with_junk_lines_loads_or_raises_data_error(tmp_path, lines, kind, prefix):
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(prefix + "\n".join(lines).encode("utf-8"))
    _check(str(path), kind, str(path))


@FUZZ
@given(
    data=st.one_of(_ROWS, st.lists(st.one_of(_ROW, _SCALAR), max_size=4), _RANDOM_ROW, _SCALAR),
    kind=st.sampled_from(KINDS),
    deep=st.integers(0, 3_000),
)
def test_fuzz_json_files_load_or_raise_data_error(tmp_path, data, kind, deep):
    path = tmp_path / "fuzz.json"
    text = json.dumps(data)
    if deep > 2_000:  # sometimes a document nested beyond the decoder's recursion limit, or a truncated one
        text = "[" * deep + text + "]" * deep
    elif deep > 1_500:
        text = text[: len(text) // 2]
    path.write_text(text, encoding="utf-8")
    _check(str(path), kind, str(path), expected=data if deep <= 1_500 and isinstance(data, list) else None)


def _csv_view(row: dict, header: list[str]) -> dict:
    """The row as ``load_rows`` sees it after CSV: every cell a string, a missing one empty, margin a float."""
    out = {c: row.get(c, "") for c in header}
    if out.get("margin") == "":
        del out["margin"]
    elif "margin" in out:
        with contextlib.suppress(ValueError):  # a non-numeric cell stays a string
            out["margin"] = float(out["margin"])
    return out


@FUZZ
@given(rows=st.lists(_ROW, min_size=1, max_size=5), kind=st.sampled_from(KINDS))
def test_fuzz_csv_rows_load_or_raise_data_error(tmp_path, rows, kind):
    cells = [{str(k): v if isinstance(v, str) else json.dumps(v) for k, v in r.items()} for r in rows]
    header = list(dict.fromkeys(k for r in cells for k in r))
    assume(header)
    path = tmp_path / "fuzz.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows(cells)
    _check(str(path), kind, str(path), expected=[_csv_view(r, header) for r in cells])


@FUZZ
@given(
    content=st.binary(max_size=300), suffix=st.sampled_from([".jsonl", ".json", ".csv"]), kind=st.sampled_from(KINDS)
)
def test_fuzz_arbitrary_bytes_load_or_raise_data_error(tmp_path, content, suffix, kind):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(content)
    _check(str(path), kind, str(path))


@FUZZ
@given(
    rows=st.lists(st.one_of(_ROW, _ROW, _SCALAR, _MESSAGES, st.just(10**5000)), max_size=5),
    kind=st.sampled_from(KINDS),
    as_tuple=st.booleans(),
)
def test_fuzz_in_memory_rows_load_or_raise_data_error(rows, kind, as_tuple):
    _check(tuple(rows) if as_tuple else rows, kind, "<list>", expected=rows)


# Regression tests: the minimal failing inputs the fuzzing found, each a traceback (not exit 2) before its fix.


def test_jsonl_margin_too_large_for_a_float_is_a_data_error(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b", "margin": 1' + "0" * 400 + "}\n")
    with pytest.raises(DataError, match=r"big\.jsonl line 1: field 'margin': expected a finite number"):
        load_rows(str(path), kind="preference")  # was OverflowError from math.isfinite


@pytest.mark.parametrize("line", ["[" * 3000, '{"prompt": ' + "7" * 5000 + "}"])
def test_jsonl_undecodable_line_is_a_data_error_naming_the_line(tmp_path, line):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"prompt": "ok"}\n' + line + "\n")
    with pytest.raises(DataError, match=r"deep\.jsonl line 2: invalid JSON"):
        load_rows(str(path), kind="prompt")  # was RecursionError / a ValueError naming neither file nor line


@pytest.mark.parametrize("text", ["[" * 3000, '[{"prompt": ' + "7" * 5000 + "}]"])
def test_json_undecodable_document_is_a_data_error_naming_the_file(tmp_path, text):
    path = tmp_path / "deep.json"
    path.write_text(text)
    with pytest.raises(DataError, match=r"deep\.json: invalid JSON"):
        load_rows(str(path), kind="prompt")


def test_csv_huge_cell_and_bad_utf8_are_data_errors(tmp_path):
    huge = tmp_path / "huge.csv"
    huge.write_text("prompt\nok\n" + "x" * 150_000 + "\n")
    with pytest.raises(DataError, match=r"huge\.csv line 3: .*field larger than field limit"):
        load_rows(str(huge), kind="prompt")  # was _csv.Error
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"prompt\n\xff\n")
    with pytest.raises(DataError, match=r"bad\.csv: not valid UTF-8"):
        load_rows(str(bad), kind="prompt")  # was UnicodeDecodeError naming no file


def test_stray_columns_do_not_overwrite_the_normalised_fields():
    rows = load_rows([{"prompt": 0, "text": "0"}], kind="sft")  # was returned with prompt=0 (an int) from the extras
    assert rows == [{"prompt": "", "completion": "0"}]
    rows = load_rows(
        [
            {
                "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                "prompt": "stale",
            }
        ],
        kind="sft",
    )
    assert rows[0]["prompt"] == "user: q\nassistant:" and rows[0]["completion"] == " a\n"
    rows = load_rows([{"prompt": [{"role": "user", "content": "q"}], "prompt_messages": 5}], kind="prompt")
    assert rows[0]["prompt_messages"] == [{"role": "user", "content": "q"}]


def test_in_memory_int_too_long_to_print_is_a_data_error():
    with pytest.raises(DataError, match=r"<list> row 1: field 'prompt'"):
        load_rows([{"prompt": 10**5000}], kind="prompt")  # was ValueError from repr() inside the error message


# ---------------------------------------------------------------------------------------------------------------
# Reward plug-in loading
# ---------------------------------------------------------------------------------------------------------------

_PLUGIN_SOURCES = {
    "ok": "def reward(prompts, completions, **kw):\n    return [1.0] * len(prompts)\nvalue = 3\nnothing = None\n",
    "syntax": "def reward(prompts, completions:\n",
    "raises": "raise RuntimeError('plug-in broke at import')\n",
    "import_error": "import rlfuzz_module_that_does_not_exist\n",
    "name_error": "reward = undefined_name\n",
    "exit": "import sys\nsys.exit(3)\n",
    "empty": "",
    "latin1": "# caf\xe9\nreward = 1\n",
}


@pytest.fixture(scope="module")
def plugin_modules(tmp_path_factory):
    """Importable modules rlfuzz_<kind> (on sys.path for this module's tests) with the sources above."""
    root = tmp_path_factory.mktemp("plugins")
    for kind, source in _PLUGIN_SOURCES.items():
        (root / f"rlfuzz_{kind}.py").write_bytes(source.encode("latin-1" if kind == "latin1" else "utf-8"))
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    for kind in _PLUGIN_SOURCES:
        sys.modules.pop(f"rlfuzz_{kind}", None)


def _resolves_or_names_spec(spec: str) -> None:
    try:
        fn = resolve_reward(spec)
    except (ValueError, FileNotFoundError) as e:  # exit 2 in the CLI
        message = str(e)
        module_part, _, attr = spec.rpartition(":")
        assert (
            spec in message
            or repr(spec) in message
            or (repr(attr) in message and (module_part in message or repr(module_part)[1:-1] in message))
        ), message
        return
    assert callable(fn)


_ATTR = st.one_of(st.sampled_from(["reward", "value", "nothing", "missing", "exact_match", ""]), _TEXT)


def _safe_random_spec(spec: str) -> bool:
    """Keep fully random specs from importing real top-level modules (``this`` prints, ``antigravity`` browses)."""
    module_part = spec.rpartition(":")[0]
    top = module_part.split(".")[0]
    if not top or "/" in module_part or module_part.endswith(".py") or not top.isidentifier():
        return True
    try:
        return importlib.util.find_spec(top) is None
    except (ImportError, ValueError):
        return True


@FUZZ
@given(spec=st.one_of(_TEXT, st.tuples(_TEXT, _ATTR).map(":".join), st.sampled_from(["exact_match", "code_tests"])))
def test_fuzz_random_reward_specs_resolve_or_raise_value_error(spec):
    assume(_safe_random_spec(spec))
    _resolves_or_names_spec(spec)


@FUZZ
@given(
    module=st.one_of(
        st.sampled_from([f"rlfuzz_{k}" for k in _PLUGIN_SOURCES]),
        st.sampled_from(["math", "json", "rewardloop.rewards.builtin", "rewardloop.rewards"]),
        st.sampled_from([".", "..", ".rlfuzz_ok", "rlfuzz_ok.", "rlfuzz..ok", "rlfuzz_ok.sub", " rlfuzz_ok"]),
        st.tuples(st.just("rlfuzz_absent"), _WORD).map("_".join),
    ),
    attr=_ATTR,
)
def test_fuzz_module_reward_specs_resolve_or_raise_value_error(plugin_modules, module, attr):
    _resolves_or_names_spec(f"{module}:{attr}")


@FUZZ
@given(
    source=st.one_of(st.sampled_from(list(_PLUGIN_SOURCES.values())), _TEXT, st.binary(max_size=40)),
    attr=_ATTR,
    shape=st.sampled_from(["file", "missing", "dir.py", "dir", "txt"]),
)
def test_fuzz_file_reward_specs_resolve_or_raise(tmp_path, source, attr, shape):
    path = {
        "file": tmp_path / "plugin.py",
        "missing": tmp_path / "absent.py",
        "dir.py": tmp_path / "folder.py",
        "dir": tmp_path,
        "txt": tmp_path / "plugin.txt",
    }[shape]
    if shape in ("file", "txt"):
        path.write_bytes(source if isinstance(source, bytes) else source.encode("utf-8"))
    elif shape == "dir.py":
        path.mkdir(exist_ok=True)
    _resolves_or_names_spec(f"{path}:{attr}")


def test_broken_plugin_files_and_modules_are_value_errors(tmp_path, plugin_modules):
    """Minimal failing inputs found by the fuzzing (each a traceback before the fix)."""
    for kind in ("syntax", "raises", "import_error", "exit"):
        path = tmp_path / f"{kind}.py"
        path.write_text(_PLUGIN_SOURCES[kind])
        with pytest.raises(ValueError, match=rf"cannot import reward plug-in file .*{kind}\.py"):
            resolve_reward(f"{path}:reward")
        with pytest.raises(ValueError, match=rf"cannot import module 'rlfuzz_{kind}' for reward"):
            resolve_reward(f"rlfuzz_{kind}:reward")
    folder = tmp_path / "folder.py"
    folder.mkdir()
    with pytest.raises(ValueError, match=r"folder\.py"):
        resolve_reward(f"{folder}:reward")  # was IsADirectoryError
    for spec in (".x:f", "..:f"):
        with pytest.raises(ValueError, match=re.escape(repr(spec))):
            resolve_reward(spec)  # was TypeError: relative import needs a package


# ---------------------------------------------------------------------------------------------------------------
# Reward return values through score_completions
# ---------------------------------------------------------------------------------------------------------------

_NAME = "fuzzed_reward"
# Not 10**400 (float() overflows) nor ints past 4300 digits (repr() fails): see the xfail tests below.
_RETURN_ITEM = st.one_of(
    st.floats(),
    st.integers(-(10**20), 10**20),
    st.booleans(),
    st.none(),
    _TEXT,
    st.lists(st.floats(), max_size=2),
    st.dictionaries(_TEXT, st.floats(), max_size=2),
)
_RETURN = st.one_of(
    st.lists(_RETURN_ITEM, max_size=6),
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=6),
    st.tuples(_RETURN_ITEM, _RETURN_ITEM),
    _RETURN_ITEM,
    st.binary(max_size=4),
)


@FUZZ
@given(
    value=_RETURN,
    n=st.integers(1, 4),
    on_error=st.sampled_from(["skip", "zero", "abort"]),
    raise_on_batch=st.booleans(),
    timeout=st.sampled_from([None, 30.0]),
)
def test_fuzz_reward_return_values_score_or_raise_reward_error(value, n, on_error, raise_on_batch, timeout):
    def fuzzed_reward(prompts, completions, **kw):
        if raise_on_batch and len(prompts) > 1:
            raise RuntimeError("batch failure, retried per sample")
        return value

    try:
        batch = score_completions(
            {_NAME: fuzzed_reward}, ["p"] * n, ["c"] * n, {"answer": ["a"] * n}, on_error=on_error, timeout=timeout
        )
    except RewardError as e:
        assert _NAME in str(e), str(e)
        event("RewardError")
        return
    event("scored")
    assert isinstance(batch, ScoredBatch)
    assert len(batch.rewards) == len(batch.valid) == n
    assert all(isinstance(r, float) and math.isfinite(r) for r in batch.rewards), batch


# Found by the fuzzing in rewards/scoring.py (tracebacks before the fix), and a dict scored from its keys.
@pytest.mark.parametrize(
    "value", [[10**400], 10**5000, {0: 1.0}], ids=["int-beyond-float", "int-beyond-repr", "dict-of-right-length"]
)
def test_reward_returning_huge_ints_or_a_dict_is_a_reward_error(value):
    with pytest.raises(RewardError, match=_NAME):
        score_completions({_NAME: lambda prompts, completions, **kw: value}, ["p"], ["c"])
