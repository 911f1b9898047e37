"""The console's log lines (mlops.logs): JSON lines for collectors, text for people, the CLI's own lines too."""

from __future__ import annotations

import io
import json
import logging
import sys

from test_cli import run_mlops

from mlops.config import LogsConfig
from mlops.logs import console_logs, log_fields


def _lines(config: LogsConfig, emit, monkeypatch) -> str:
    console = io.StringIO()
    monkeypatch.setattr(sys, "stderr", console)
    with console_logs(config):
        emit()
    return console.getvalue()


def test_json__one_object_per_line_with_the_fields_the_code_knows(tool_env, monkeypatch):
    logger = logging.getLogger("mlops.example")

    def emit():
        logger.info("scored", extra={"request_id": "r-1"})
        with log_fields(model_version=7):
            logger.warning("drifted")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")

    lines = [json.loads(line) for line in _lines(LogsConfig(format="json"), emit, monkeypatch).splitlines()]
    assert [line["message"] for line in lines if line["logger"] == "mlops.example"][:2] == ["scored", "drifted"]
    assert lines[0]["level"] == "info" and lines[0]["request_id"] == "r-1" and "model_version" not in lines[0]
    assert lines[1]["model_version"] == "7" and lines[1]["time"].endswith("+00:00")
    assert "ValueError: boom" in lines[2]["error"] and "\n" not in json.dumps(lines[2])


def test_text__quiet_by_default_and_the_level_from_config(tool_env, monkeypatch):
    logger = logging.getLogger("mlops.example")

    def emit():
        logger.info("a detail")
        logger.warning("worth a look")

    assert _lines(LogsConfig(format="text"), emit, monkeypatch) == "warning: worth a look\n"
    shown = _lines(LogsConfig(format="text", level="INFO"), emit, monkeypatch).splitlines()
    assert shown[0].endswith(" a detail") and shown[1] == "warning: worth a look"
    assert _lines(LogsConfig(format="text", level="ERROR"), emit, monkeypatch) == ""
    failed = lambda: logging.getLogger("prefect.task_runs").error("Task run failed with exception: X")  # noqa: E731
    assert _lines(LogsConfig(format="text"), failed, monkeypatch) == "", "the command's own error line says it"
    assert '"level": "error"' in _lines(LogsConfig(format="json"), failed, monkeypatch), "a collector keeps it"


def test_handler__removed_after_the_block_and_prefects_console_handler_back():
    root = logging.getLogger()
    before = list(root.handlers)
    with console_logs(LogsConfig(format="json")):
        assert len([each for each in root.handlers if type(each).__name__ == "ConsoleLogHandler"]) == 1
    assert root.handlers == before


def test_cli__json_when_not_a_terminal_and_text_when_told(tmp_path):
    data = tmp_path / "bad.csv"
    data.write_text("mean_radius;mean_area\n1.0;2.0\n")  # delimited by ';': a data-file error, exit 2
    result = run_mlops("validate", str(data), state_dir=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]  # stderr is a pipe: JSON
    assert lines and any(line["level"] == "error" for line in lines)
    text = run_mlops("--log-format", "text", "validate", str(data), state_dir=tmp_path)
    assert text.returncode == result.returncode
    assert "error: " in text.stderr and not text.stderr.lstrip().startswith("{")
    assert run_mlops("--log-level", "LOUD", "validate", state_dir=tmp_path).returncode == 2
