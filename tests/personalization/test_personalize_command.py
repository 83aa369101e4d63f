"""``rewardloop personalize``: every environment runs through the command; the table, the JSON and the plot are
written; LinUCB beats random on the feed; bad policy names are config errors."""

from __future__ import annotations

import json

import pytest

from rewardloop.cli import main
from rewardloop.config import ConfigError, load_config
from rewardloop.personalize import PersonalizeConfig, compare


@pytest.mark.parametrize("env", ["feed", "playlist", "search"])
def test_command_writes_table_json_and_plot(tmp_path, capsys, env):
    rc = main(["personalize", f"env={env}", "steps=60", "seeds=1", "policies=[random, oracle]", f"out={tmp_path}"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| random |" in printed and "| oracle |" in printed
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["env"] == env and result["summary"]["oracle"]["regret"][0] == pytest.approx(0.0, abs=1e-9)
    assert (tmp_path / "regret.png").stat().st_size > 0


def test_linucb_beats_random_on_the_feed():
    s = compare(PersonalizeConfig(env="feed", steps=600, seeds=1, policies=["random", "linucb"]))["summary"]
    assert s["linucb"]["regret"][0] < 0.7 < s["random"]["regret"][0]


def test_unknown_policy_is_named():
    with pytest.raises(ConfigError, match="unknown policy 'lin-ucb'"):
        load_config(PersonalizeConfig, None, ["policies=[random, lin-ucb]"])
