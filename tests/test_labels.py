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


def test_add_labels__with_known_ids_a_label_for_no_logged_prediction_is_refused(tmp_path):
    frame = pd.DataFrame({"request_id": ["logged", "stranger", "stranger", "ghost"], "record": [0, 0, 1, 0],
                          "label": [1, 0, 1, 1]})

    added = add_labels(frame, tmp_path / "labels", BINARY, known={"logged"})

    assert (added.accepted, added.refused, added.unknown) == (1, 3, 3)
    assert "3 label(s) left out: their request_id matches no logged prediction (e.g. 'stranger', 'ghost')" in added.problems[0]
    assert read_labels(tmp_path / "labels")[0]["request_id"].tolist() == ["logged"]


def test_add_labels__without_known_ids_any_request_id_is_stored(tmp_path):
    added = add_labels(pd.DataFrame({"request_id": ["anything"], "label": [1]}), tmp_path / "labels", BINARY)
    assert (added.accepted, added.unknown) == (1, 0)


def test_add_labels__within_one_call_the_later_row_wins_and_is_counted(tmp_path):
    # Given two rows for ("a", 0), the later one usable, and a refused row for ("b", 0) after a usable one
    frame = pd.DataFrame({"request_id": ["a", "b", "a", "b"], "record": [0, 0, 0, 0], "label": [0, 1, 1, 7]})
    # When they are added
    added = add_labels(frame, tmp_path / "labels", BINARY)
    # Then the later usable label wins, the replaced one is a duplicate, the unusable one refused
    assert (added.accepted, added.refused, added.duplicates) == (2, 1, 1)
    assert "1 label(s) replaced by a later one for the same request_id and record in this call (e.g. 'a' record 0)." in added.problems
    stored, replaced = read_labels(tmp_path / "labels")
    assert dict(zip(stored["request_id"], stored["label"])) == {"a": 1, "b": 1} and replaced == 0
    assert added.to_dict()["duplicates"] == 1 and added.to_dict()["unknown"] == 0


def test_add_labels__numbers_of_any_size_are_values_to_refuse_not_crashes(tmp_path):
    # The API hands over JSON as parsed: a 400-digit number, a record as text, a request id as a number
    frame = pd.DataFrame({"request_id": [42, "a", "b"], "record": ["1", 10**400, 0.0], "label": [1, 1, 10**400]},
                         dtype=object)

    added = add_labels(frame, tmp_path / "labels", BINARY, known={"42", "a", "b"})

    assert (added.accepted, added.refused) == (1, 2)
    assert any("record is not a whole number" in line for line in added.problems)
    (shown,) = [line for line in added.problems if "not one of [0, 1]" in line]
    assert shown.endswith("(e.g. " + "1" + "0" * 38 + "…).")  # cut short, not 400 digits
    stored, _ = read_labels(tmp_path / "labels")
    assert stored[["request_id", "record"]].values.tolist() == [["42", 1]] and stored["record"].dtype == "int64"


def test_labels_cli__refuses_labels_for_requests_never_logged(settings, tmp_path):
    from click.testing import CliRunner

    from mlops.cli import cli

    _log(settings.predictions_dir, "served", 1)
    path = tmp_path / "labels.csv"
    path.write_text("request_id,record,label\nserved,0,1\nunheard-of,0,1\n")

    result = CliRunner().invoke(cli, ["--state-dir", str(settings.state_dir), "labels", "add", str(path)])

    assert result.exit_code == 0, result.output
    assert "1 label(s) stored" in result.output and "1 refused" in result.output
    assert "matches no logged prediction (e.g. 'unheard-of')" in result.output
    assert read_labels(settings.labels_dir)[0]["request_id"].tolist() == ["served"]
