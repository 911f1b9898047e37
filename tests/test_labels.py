"""The label store: labels in (frame, file, CLI), checked against the target, deduplicated, counted per version and day."""

from __future__ import annotations

import pandas as pd
import pytest

from mlops.contract import ColumnContract
from mlops.errors import DataError
from mlops.labels import add_label_file, add_labels, label_status, read_labels
from mlops.prediction_log import PredictionLogWriter, read_prediction_log

BINARY = ColumnContract(name="target", type="int", categories=[0, 1])
SPECIES = ColumnContract(name="species", type="str", categories=["Adelie", "Gentoo"])


def _log(folder, request_id, rows, version="1"):
    writer = PredictionLogWriter(folder)
    writer.log(request_id=request_id, model_name="m", model_version=version,
               inputs=[{"x": float(i)} for i in range(rows)], predictions=[1] * rows)
    writer.close()


def test_add_labels__good_rows_are_stored_bad_ones_counted_and_named(tmp_path):
    # Given labels with an empty label, an unknown class, a fraction, no request id and a bad record
    frame = pd.DataFrame({
        "request_id": ["a", "a", "b", "c", "d", None, "e"],
        "record": [0, 1, 0, 0, 0, 0, "x"],
        "label": ["1", 0, "", "7", "0.5", 1, 1],
    })
    # When they are added
    added = add_labels(frame, tmp_path / "labels", BINARY, source="test")
    # Then the two usable rows are stored in one Parquet file, the five others refused and explained
    assert (added.accepted, added.refused) == (2, 5)
    assert added.path.name.startswith("labels-") and added.path.suffix == ".parquet"
    text = "\n".join(added.problems)
    assert "no request_id" in text and "record is not a whole number" in text and "3 label(s) left out" in text
    stored, replaced = read_labels(tmp_path / "labels")
    assert stored[["request_id", "record", "label"]].values.tolist() == [["a", 0, 1], ["a", 1, 0]]
    assert set(stored["source"]) == {"test"} and replaced == 0


def test_add_labels__nothing_usable_writes_nothing(tmp_path):
    added = add_labels(pd.DataFrame({"request_id": ["a"], "label": ["Chinstrap"]}), tmp_path / "labels", SPECIES)
    assert (added.accepted, added.refused, added.path) == (0, 1, None)
    assert "not one of ['Adelie', 'Gentoo']" in added.problems[0]
    assert read_labels(tmp_path / "labels")[0].empty


def test_read_labels__the_later_label_wins_per_request_and_record(tmp_path):
    store = tmp_path / "labels"
    add_labels(pd.DataFrame({"request_id": ["a", "b"], "label": ["Adelie", "Adelie"]}), store, SPECIES)
    add_labels(pd.DataFrame({"request_id": ["a"], "record": [0], "label": [" Gentoo "]}), store, SPECIES)
    stored, replaced = read_labels(store)
    assert dict(zip(stored["request_id"], stored["label"])) == {"a": "Gentoo", "b": "Adelie"}
    assert replaced == 1


def test_add_label_file__csv_with_the_target_column_name_keeps_leading_zeros(tmp_path):
    path = tmp_path / "truth.csv"
    path.write_text("request_id,record,target\n0042,0,1\n0042,1,true\n")
    added = add_label_file(path, tmp_path / "labels", BINARY)
    assert (added.accepted, added.refused) == (1, 1)  # "true" is not one of the classes [0, 1]
    stored, _ = read_labels(tmp_path / "labels")
    assert stored["request_id"].tolist() == ["0042"] and stored["source"].tolist() == ["file:truth.csv"]


def test_add_label_file__a_file_without_label_column_is_a_data_error(tmp_path):
    path = tmp_path / "truth.csv"
    path.write_text("request_id,truth\na,1\n")
    with pytest.raises(DataError, match="lacks column"):
        add_label_file(path, tmp_path / "labels", BINARY)


def test_label_status__labeled_predictions_per_version_and_day(tmp_path):
    # Given 3 predictions of v1 and 2 of v2, with labels for 2 of v1's, 1 of v2's and one unknown request
    _log(tmp_path / "log", "r1", 3, version="1")
    _log(tmp_path / "log", "r2", 2, version="2")
    labels = pd.DataFrame({"request_id": ["r1", "r1", "r2", "nope"], "record": [0, 2, 1, 0], "label": [1, 0, 1, 1]})
    add_labels(labels, tmp_path / "labels", BINARY)
    # When the status is read
    table, unmatched = label_status(tmp_path / "labels", tmp_path / "log")
    # Then each version's day says how many of its predictions have a label
    day = pd.Timestamp(read_prediction_log(tmp_path / "log")["timestamp"].iloc[0]).strftime("%Y-%m-%d")
    assert table.values.tolist() == [["1", day, 3, 2, pytest.approx(2 / 3)], ["2", day, 2, 1, 0.5]]
    assert unmatched == 1


def test_labels_cli__add_then_status(settings, tmp_path):
    from click.testing import CliRunner

    from mlops.cli import cli

    _log(settings.predictions_dir, "req", 4)
    path = tmp_path / "labels.csv"
    path.write_text("request_id,record,label\nreq,0,1\nreq,1,0\nreq,2,maybe\n")
    runner = CliRunner()
    added = runner.invoke(cli, ["--state-dir", str(settings.state_dir), "labels", "add", str(path)])
    assert added.exit_code == 0, added.output
    assert "2 label(s) stored" in added.output and "1 refused" in added.output and "'maybe'" in added.output
    status = runner.invoke(cli, ["--state-dir", str(settings.state_dir), "labels", "status"])
    assert status.exit_code == 0, status.output
    assert "v1" in status.output and "2/4 labeled (50%)" in status.output
    missing = runner.invoke(cli, ["--state-dir", str(settings.state_dir), "labels", "add", str(tmp_path / "no.csv")])
    assert missing.exit_code == 2 and "Traceback" not in missing.output
