"""Label Studio / Argilla interchange: export → import into a fresh store gives the same labels; importing twice
stores once; exports from the tools themselves (their ids, users, ranking answers) import; bad input names the
file, task and field and writes nothing; the CLI runs both actions. The store fixture runs each test on SQLite and,
with REWARDLOOP_TEST_PG_URL, on PostgreSQL."""

from __future__ import annotations

import json
import uuid
import xml.etree.ElementTree as ET

import pytest

from rewardloop.cli import main
from rewardloop.store import Store
from rewardloop.store.interchange import (
    ARGILLA_SETTINGS,
    InterchangeError,
    argilla_user,
    companion,
    export_tasks,
)
from rewardloop.store.interchange_read import import_tasks

CHAT = [{"role": "user", "content": "name a colour"}]


def _fill(store: Store) -> dict[str, str]:
    """Two model versions answering one text prompt, a third sample, two chat answers; every label kind."""
    ids = {
        "four": store.log_interaction(model_version="m@1", prompt="2+2=", completion="4"),
        "five": store.log_interaction(model_version="m@2", prompt="2+2=", completion="5"),
        "four2": store.log_interaction(model_version="m@2", prompt="2+2=", completion="four"),
        "red": store.log_interaction(model_version="m@1", messages=CHAT, completion="red"),
        "mud": store.log_interaction(model_version="m@2", messages=CHAT, completion="mud"),
    }
    f, v, r = ids["four"], ids["five"], ids["red"]
    fb = [
        dict(response_id=f, kind="pairwise", value=1, other_response_id=v, user_id="alice", comment="4 is right"),
        dict(response_id=v, kind="pairwise", value=0, other_response_id=f, user_id="bob"),  # the same pair reversed
        dict(response_id=r, kind="pairwise", value=0.5, other_response_id=ids["mud"], user_id="alice"),
        dict(response_id=ids["mud"], kind="pairwise", value=-1, other_response_id=r, user_id="bob"),
        dict(response_id=f, kind="rating", value=5, user_id="alice"),
        dict(response_id=f, kind="rating", value=4, user_id="alice"),  # a second rating by the same annotator
        dict(response_id=v, kind="thumbs", value=-1, user_id="bob"),
        dict(response_id=r, kind="thumbs", value=1),  # no annotator
        dict(response_id=v, kind="comment", comment="wrong sum", user_id="bob"),
        dict(response_id=v, kind="engagement", event="click"),  # not an annotation: not exported
    ]
    store.add_feedback_batch([{**x, "idempotency_key": f"k{i}"} for i, x in enumerate(fb)])
    return ids


def _labels(store: Store) -> list[tuple]:
    """Every annotation label with its responses' contents (a pair in a canonical order, the verdict flipped)."""
    out = []
    for fb in store.feedback_since(0):
        if fb["kind"] == "engagement":
            continue
        a = store.get_interaction(fb["response_id"])
        b = store.get_interaction(fb["other_response_id"]) if fb["other_response_id"] else None
        value = fb["value"]
        if b is not None and a["id"] > b["id"]:
            a, b, value = b, a, {1.0: 0.0, 0.0: 1.0}.get(value, value)
        both = [
            (x["id"], x["model_version"], x["kind"], x["prompt"], x["messages"], x["completion"]) for x in (a, b) if x
        ]
        out.append((fb["idempotency_key"], fb["kind"], value, fb["user_id"], fb["comment"], both))
    return sorted(out, key=repr)


@pytest.mark.parametrize("fmt,suffix", [("labelstudio", ".json"), ("argilla", ".json"), ("argilla", ".jsonl")])
def test_export_then_import_into_a_fresh_store_gives_the_same_labels(store, tmp_path, fmt, suffix):
    with Store.open(f"sqlite:///{tmp_path / 'source.db'}") as source:
        _fill(source)
        want = _labels(source)
        out = tmp_path / f"tasks{suffix}"
        summary = export_tasks(source, fmt, out)
    # pairs: four/five (labelled twice), red/mud (labelled twice), five/four2 (neighbours, unlabelled); 5 singles
    assert (summary["pair_tasks"], summary["single_tasks"], summary["labels"]) == (3, 5, 9)
    assert companion(out, fmt).exists()

    first = import_tasks(store, fmt, out)  # `store` is fresh: on PostgreSQL too when it is configured
    # Argilla holds one answer per annotator and question in a record: alice's second rating is in a copy
    rows = {"labelstudio": 8, "argilla": 9}[fmt]
    assert summary["rows"] == rows
    assert (first["tasks"], first["interactions_created"], first["feedback_created"]) == (rows, 5, 9)
    assert _labels(store) == want
    again = import_tasks(store, fmt, out)
    assert (again["interactions_created"], again["feedback_created"], again["feedback_already_stored"]) == (0, 0, 9)
    assert _labels(store) == want


def test_labelstudio_tasks_and_config(store, tmp_path):
    ids = _fill(store)
    export_tasks(store, "labelstudio", tmp_path / "ls.json")
    config = ET.fromstring((tmp_path / "ls.config.xml").read_text())
    tags = {el.get("name"): el.tag for el in config.iter() if el.get("name")}
    assert tags == {
        "prompt": "Text",
        "response_a": "Text",
        "response_b": "Text",
        "preference": "Pairwise",
        "verdict": "Choices",
        "rating": "Rating",
        "thumbs": "Choices",
        "comment": "TextArea",
    }
    assert config.find("Pairwise").get("toName") == "response_a,response_b"
    tasks = json.loads((tmp_path / "ls.json").read_text())
    # every $variable of the config is in every task's data
    assert all({"prompt", "response_a", "response_b"} <= set(t["data"]) for t in tasks)
    pair = next(t for t in tasks if t["data"]["rewardloop"]["task"] == f"pair:{ids['four']}:{ids['five']}")
    assert (pair["data"]["prompt"], pair["data"]["response_a"], pair["data"]["response_b"]) == ("2+2=", "4", "5")
    results = {a["rewardloop_user_id"]: a["result"] for a in pair["annotations"]}
    assert results["alice"][0]["type"] == "pairwise" and results["alice"][0]["value"] == {"selected": "left"}
    assert results["alice"][1]["value"] == {"text": ["4 is right"]}
    assert results["bob"][0]["value"] == {"selected": "left"}  # bob posted (five, four, 0 = four better)
    chat = next(t for t in tasks if t["data"]["response_a"] == "red" and t["data"]["response_b"] == "mud")
    assert chat["data"]["prompt"] == "user: name a colour"
    assert sorted(r["value"]["choices"][0] for a in chat["annotations"] for r in a["result"]) == ["Both bad", "Tie"]
    single = next(t for t in tasks if t["data"]["rewardloop"]["task"] == f"single:{ids['four']}")
    # two ratings by alice: two annotations (a Label Studio annotation holds one answer per control)
    assert [a["result"][0]["value"] for a in single["annotations"]] == [{"rating": 5}, {"rating": 4}]


def test_argilla_records_and_settings(store, tmp_path):
    ids = _fill(store)
    export_tasks(store, "argilla", tmp_path / "ag.jsonl")
    settings = json.loads((tmp_path / "ag.settings.json").read_text())
    assert settings == ARGILLA_SETTINGS
    assert [(q["name"], q["settings"]["type"]) for q in settings["questions"]] == [
        ("preference", "label_selection"),
        ("rating", "rating"),
        ("thumbs", "label_selection"),
        ("comment", "text"),
    ]
    records = [json.loads(line) for line in (tmp_path / "ag.jsonl").read_text().splitlines()]
    assert all(
        set(r) == {"id", "fields", "metadata", "suggestions", "responses", "vectors", "_server_id"} for r in records
    )
    pair = next(r for r in records if r["id"] == f"pair:{ids['four']}:{ids['five']}")
    assert pair["fields"] == {"prompt": "2+2=", "response_a": "4", "response_b": "5"}
    alice, bob = argilla_user("alice"), argilla_user("bob")
    assert uuid.UUID(alice) and alice != bob
    assert sorted((x["user_id"], x["value"]) for x in pair["responses"]["preference"]) == sorted(
        [(alice, "a"), (bob, "a")]
    )
    assert pair["responses"]["comment"] == [{"value": "4 is right", "user_id": alice, "status": "submitted"}]
    single = next(r for r in records if r["id"] == f"single:{ids['five']}")
    assert single["fields"]["response_b"] is None
    assert single["responses"]["thumbs"][0]["value"] == "down"


LS_EXPORT = [  # as Label Studio exports a project: its own task / annotation ids, integer users, random result ids
    {
        "id": 17,
        "data": {"prompt": "Capital of France?", "response_a": "Paris", "response_b": "Lyon"},
        "annotations": [
            {
                "id": 4,
                "completed_by": 3,
                "was_cancelled": False,
                "result": [
                    {"id": "Dx_aB91", "from_name": "preference", "to_name": "preference", "type": "pairwise",
                     "value": {"selected": "left"}},
                    {"id": "Qe7", "from_name": "comment", "to_name": "prompt", "type": "textarea",
                     "value": {"text": ["Lyon is not the capital"]}},
                ],
            },
            {"id": 5, "completed_by": {"id": 9, "email": "eve@example.com"}, "was_cancelled": False, "result": [
                {"id": "z1", "from_name": "verdict", "to_name": "prompt", "type": "choices",
                 "value": {"choices": ["Both bad"]}}]},
            {"id": 6, "completed_by": 7, "was_cancelled": True, "result": [
                {"id": "z2", "from_name": "preference", "to_name": "preference", "type": "pairwise",
                 "value": {"selected": "right"}}]},
        ],
        "predictions": [],
    },
    {
        "id": 18,
        "data": {"prompt": "Capital of France?", "response_a": "Paris"},
        "annotations": [{"completed_by": 3, "result": [
            {"id": "r1", "from_name": "rating", "to_name": "response_a", "type": "rating", "value": {"rating": 5}},
            {"id": "r2", "from_name": "thumbs", "to_name": "response_a", "type": "choices",
             "value": {"choices": ["Good"]}},
        ]}],
    },
]  # fmt: skip


def test_import_a_labelstudio_project_export(store, tmp_path):
    path = tmp_path / "project.json"
    path.write_text(json.dumps(LS_EXPORT))
    summary = import_tasks(store, "labelstudio", path)
    # Paris appears in both tasks: one interaction (its id is derived from prompt and text)
    assert (summary["interactions_created"], summary["feedback_created"]) == (2, 4)
    rows = {fb["idempotency_key"]: fb for fb in store.feedback_since(0)}
    assert set(rows) == {
        "labelstudio:17:labelstudio:3:preference",
        "labelstudio:17:labelstudio:eve@example.com:verdict",
        "labelstudio:18:labelstudio:3:rating",
        "labelstudio:18:labelstudio:3:thumbs",
    }  # the cancelled annotation is skipped
    pick = rows["labelstudio:17:labelstudio:3:preference"]
    assert (pick["kind"], pick["value"], pick["comment"]) == ("pairwise", 1.0, "Lyon is not the capital")
    paris, lyon = store.get_interaction(pick["response_id"]), store.get_interaction(pick["other_response_id"])
    assert (paris["completion"], lyon["completion"], paris["model_version"]) == ("Paris", "Lyon", "import:labelstudio")
    assert paris["prompt"] == "Capital of France?" and paris["kind"] == "completion"
    assert rows["labelstudio:18:labelstudio:3:rating"]["response_id"] == paris["id"]
    assert rows["labelstudio:17:labelstudio:eve@example.com:verdict"]["value"] == -1.0
    assert import_tasks(store, "labelstudio", path)["feedback_created"] == 0


def test_import_argilla_records_from_the_sdk(store, tmp_path):
    """Records as Argilla's SDK writes them (no rewardloop metadata; UUID users; a ranking question; a draft)."""
    u1, u2 = str(uuid.uuid4()), str(uuid.uuid4())
    records = [
        {
            "id": "rec-1",
            "fields": {"prompt": "2+2=", "response_a": "4", "response_b": "5"},
            "metadata": {},
            "responses": {
                "preference": [{"value": ["response_b", "response_a"], "user_id": u1}],
                "comment": [{"value": "both odd", "user_id": u2}, {"value": "hm", "user_id": u1, "status": "draft"}],
            },
        },
        {
            "id": "rec-2",
            "fields": {"prompt": "2+2=", "response_a": "4", "response_b": "5"},
            "responses": {"preference": [{"value": [{"value": "response_a", "rank": 1}, {"value": "response_b", "rank": 1}], "user_id": u2}]},
        },
        {"id": "rec-3", "fields": {"prompt": "2+2=", "response_a": "4"}, "responses": {"rating": [{"value": 2, "user_id": u1}]}},
    ]  # fmt: skip
    path = tmp_path / "records.json"
    path.write_text(json.dumps(records))
    summary = import_tasks(store, "argilla", path)
    assert (summary["interactions_created"], summary["feedback_created"]) == (2, 4)
    rows = {fb["idempotency_key"]: fb for fb in store.feedback_since(0)}
    assert rows[f"argilla:rec-1:argilla:{u1}:preference"]["value"] == 0.0  # response_b ranked first
    assert rows[f"argilla:rec-1:argilla:{u2}:comment"]["comment"] == "both odd"  # no pairwise by u2: a comment row
    assert rows[f"argilla:rec-2:argilla:{u2}:preference"]["value"] == 0.5  # equal ranks: a tie
    rating = rows[f"argilla:rec-3:argilla:{u1}:rating"]
    assert (rating["kind"], rating["value"], rating["user_id"]) == ("rating", 2.0, f"argilla:{u1}")


def _count(store: Store) -> tuple[int, int]:
    from sqlalchemy import func, select

    from rewardloop.store.models import Feedback, Interaction

    with store._session() as s:
        return s.scalar(select(func.count()).select_from(Interaction)), s.scalar(
            select(func.count()).select_from(Feedback)
        )


@pytest.mark.parametrize(
    "fmt,bad,message",
    [
        ("labelstudio", {"data": {"prompt": "p", "response_a": "a"}, "annotations": [{"result": [
            {"type": "rating", "from_name": "rating", "value": {"rating": 7}}]}]},
         r"tasks\[2\]: rating label by None: value: rating must be in 1–5, got 7"),
        ("labelstudio", {"data": {"prompt": "p"}}, r"tasks\[2\]\.data\.response_a: expected a string, got None"),
        ("labelstudio", {"data": {"prompt": "p", "response_a": "a"}, "annotations": [{"result": [
            {"type": "labels", "value": {}}]}]},
         r"tasks\[2\]\.annotations\[0\]\.result\[0\]\.type: expected pairwise, choices, rating or textarea, got 'labels'"),
        ("labelstudio", {"data": {"prompt": "p", "response_a": "a"}, "annotations": [{"result": [
            {"type": "choices", "value": {"choices": ["Maybe"]}}]}]},
         r"tasks\[2\]\.annotations\[0\]\.result\[0\]\.value\.choices: expected one of 'Tie', 'Both bad', 'Good', 'Bad'"),
        ("argilla", {"fields": {"prompt": "p", "response_a": "a", "response_b": "b"},
                     "responses": {"preference": [{"value": "left", "user_id": "u"}]}},
         r"records\[2\]\.responses\.preference\[0\]\.value: expected one of 'a', 'b', 'tie', 'both_bad', got 'left'"),
        ("argilla", {"fields": {"prompt": "p", "response_a": "a"}, "responses": {"fluency": [{"value": 1, "user_id": "u"}]}},
         r"records\[2\]\.responses\.fluency\[0\]: unknown question 'fluency'"),
        ("argilla", {"fields": {"prompt": "p", "response_a": "a"}, "responses": {"preference": [{"value": "a", "user_id": "u"}]}},
         r"records\[2\]: pairwise label by 'argilla:u': other_response_id: pairwise feedback needs the compared"),
    ],
)  # fmt: skip
def test_bad_input_names_file_task_and_field_and_writes_nothing(store, tmp_path, fmt, bad, message):
    good = (
        {"data": {"prompt": "q", "response_a": "x"}}
        if fmt == "labelstudio"
        else {"fields": {"prompt": "q", "response_a": "x"}}
    )
    path = tmp_path / "in.json"
    path.write_text(json.dumps([good, good, bad]))  # two good tasks first: nothing of them may be written either
    with pytest.raises(InterchangeError, match=rf"^{tmp_path}/in\.json: {message}"):
        import_tasks(store, fmt, path)
    assert _count(store) == (0, 0)


def test_unreadable_files(store, tmp_path):
    (tmp_path / "broken.json").write_text('[{"data": ')
    with pytest.raises(InterchangeError, match=r"broken\.json: not valid JSON \(line 1"):
        import_tasks(store, "labelstudio", tmp_path / "broken.json")
    (tmp_path / "obj.json").write_text("{}")
    with pytest.raises(InterchangeError, match=r"obj\.json: expected a JSON list of Label Studio tasks, got dict"):
        import_tasks(store, "labelstudio", tmp_path / "obj.json")
    with pytest.raises(ValueError, match=r"out: .* must end in \.json for format=labelstudio"):
        export_tasks(store, "labelstudio", tmp_path / "tasks.jsonl")
    assert _count(store) == (0, 0)


def test_cli_export_and_import(store_url, tmp_path, capsys):
    with Store.open(f"sqlite:///{tmp_path / 'src.db'}") as source:
        _fill(source)
        want = _labels(source)
    out = tmp_path / "tasks.json"
    assert main(["feedback", "export", "--store", f"sqlite:///{tmp_path / 'src.db'}", "--format", "labelstudio", "--out", str(out)]) == 0  # fmt: skip
    assert "pair_tasks: 3" in capsys.readouterr().out
    argv = ["feedback", "action=import", f"store.url={store_url}", "format=labelstudio", f"input={out}"]
    assert main(argv) == 0
    assert "feedback_created: 9" in capsys.readouterr().out
    with Store.open(store_url) as store:
        assert _labels(store) == want
    assert main(["feedback", "action=import", f"store.url={store_url}", "format=pairs", f"input={out}"]) == 2
    assert "format: import reads labelstudio or argilla files, got 'pairs'" in capsys.readouterr().err
    assert main(["feedback", "action=import", f"store.url={store_url}", "format=argilla"]) == 2
    assert "input: required" in capsys.readouterr().err


def test_label_studio_sdk_reads_the_config_and_its_regions_import(store, tmp_path):
    """With label-studio-sdk installed: its LabelInterface parses the exported config, and the results it builds for
    each control (what the Label Studio UI stores) import as the right labels."""
    sdk = pytest.importorskip("label_studio_sdk.label_interface")
    export_tasks(store, "labelstudio", tmp_path / "empty.json")
    ui = sdk.LabelInterface((tmp_path / "empty.config.xml").read_text())
    assert sorted((c.name, c.tag) for c in ui.controls) == [
        ("comment", "TextArea"),
        ("preference", "Pairwise"),
        ("rating", "Rating"),
        ("thumbs", "Choices"),
        ("verdict", "Choices"),
    ]
    data = {"prompt": "p", "response_a": "a", "response_b": "b"}
    assert ui.validate_task({"data": data})

    def result(name: str, *args, **kwargs) -> dict:
        return json.loads(ui.get_control(name).label(*args, **kwargs).to_json())

    tasks = [
        {"id": 1, "data": data, "annotations": [{"completed_by": 1, "result": [result("preference", "right")]}]},
        {"id": 2, "data": data, "annotations": [{"completed_by": 1, "result": [result("verdict", ["Tie"])]}]},
        {"id": 3, "data": {**data, "response_b": ""}, "annotations": [{"completed_by": 1, "result": [
            result("rating", rating=2), result("thumbs", ["Bad"]), result("comment", text=["meh"])]}]},
    ]  # fmt: skip
    (tmp_path / "ui.json").write_text(json.dumps(tasks))
    import_tasks(store, "labelstudio", tmp_path / "ui.json")
    got = sorted((fb["kind"], fb["value"], fb["comment"]) for fb in store.feedback_since(0))
    assert got == [("comment", None, "meh"), ("pairwise", 0.0, None), ("pairwise", 0.5, None), ("rating", 2.0, None), ("thumbs", -1.0, None)]  # fmt: skip


def test_argilla_sdk_loads_the_export_and_its_records_import(store, tmp_path):
    """With argilla installed: rg.Settings.from_json and rg.Record.from_dict load the export; the records the SDK
    writes back (Record.to_dict, as dataset.records.to_json does) import into a fresh store with the same labels.
    The SDK asks a server who the user is when it builds questions: a stub answers on loopback."""
    rg = pytest.importorskip("argilla")
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Me(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"id": str(uuid.uuid4()), "username": "owner", "role": "owner"}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Me)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        rg.Argilla(api_url=f"http://127.0.0.1:{server.server_port}", api_key="test")  # the SDK's default client
        with Store.open(f"sqlite:///{tmp_path / 'source.db'}") as source:
            _fill(source)
            want = _labels(source)
            export_tasks(source, "argilla", tmp_path / "records.jsonl")
        settings = rg.Settings.from_json(tmp_path / "records.settings.json")
        settings.validate()
        assert [type(q).__name__ for q in settings.questions] == [
            "LabelQuestion",
            "RatingQuestion",
            "LabelQuestion",
            "TextQuestion",
        ]
        lines = (tmp_path / "records.jsonl").read_text().splitlines()
        records = [rg.Record.from_dict(json.loads(line)) for line in lines]
        (tmp_path / "sdk.json").write_text(json.dumps([r.to_dict() for r in records]))
    finally:
        server.shutdown()
    import_tasks(store, "argilla", tmp_path / "sdk.json")
    assert _labels(store) == want
