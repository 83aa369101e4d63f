"""``rewardloop serve``: its config through the CLI's one config system, and the uvicorn call it makes."""

from __future__ import annotations

import pytest
import yaml

from rewardloop import cli
from rewardloop.serve import ServeConfig


def test_config_serve_prints_defaults_with_loopback(capsys):
    assert cli.main(["config", "serve"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["serve"]["host"] == "127.0.0.1" and cfg["serve"]["port"] == 8000
    assert cfg["store"]["url"] == "sqlite:///rewardloop.db"


def test_bad_override_names_the_key(capsys):
    assert cli.main(["serve", "serve.max_batch=0"]) == 2
    assert "serve.max_batch" in capsys.readouterr().err


def test_serve_runs_uvicorn_on_the_configured_address(monkeypatch, tmp_path):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    argv = [
        "serve",
        "model.device=cpu",
        "serve.port=8123",
        "serve.model_name=m",
        f"store.url=sqlite:///{tmp_path}/s.db",
    ]
    assert cli.main(argv) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123
    assert seen["app"].state.server.name == "m" and (tmp_path / "s.db").exists()
    seen["app"].state.server.store.close()
    with pytest.raises(ValueError):
        ServeConfig.model_validate({"serve": {"port": 70000}})
