"""The gate the library calls: a table or a file against its contract, whole or in chunks.

The chunked gate's findings are the whole file's, on the corpus and on random files;
its pyarrow reader reads as pandas does or refuses. The gate on clean data never
imports Great Expectations.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.contract import (
    load_contract,
    validate_file_in_chunks,
    validate_file_with_contract,
    validate_with_contract,
    write_contract,
)
from mlops.data import FastReadRefused, iter_table_fast, load_table
from mlops.errors import DataError

from .frames import CORPUS, CORPUS_CONTRACT, REPO, corpus_contract, findings, random_frame, readable_corpus

TRAIN = REPO / "data" / "train.csv"
CONTRACT = REPO / "data" / "contracts" / "breast_cancer.yaml"


def test_validate_with_contract__severity_override_turns_a_block_into_a_warning(tmp_path: Path):
    contract = load_contract(CONTRACT)
    columns = [
        column.model_copy(update={"severity": {"range": "warn"}}) if column.name == "mean_area" else column
        for column in contract.columns
    ]
    path = write_contract(contract.model_copy(update={"columns": columns}), tmp_path / "c.yaml")
    frame = pd.read_csv(TRAIN)
    frame.loc[:2, "mean_area"] = 1e6

    result = validate_with_contract(frame, path)

    assert result.success
    [warning] = result.warnings
    assert (warning.column, warning.unexpected_count, warning.severity) == ("mean_area", 3, "warn")
    assert "passed with 1 warning" in result.summary()


def test_validate_with_contract__leaves_the_callers_frame_as_it_was():
    frame = load_table(CORPUS / "unparseable_numbers.csv")
    before = frame.copy()

    result = validate_with_contract(frame, CORPUS_CONTRACT, scope="batch")

    assert [failure.expectation for failure in result.failures][:1] == ["values_parse_as_numbers"]
    pd.testing.assert_frame_equal(frame, before)


def test_validate_file_with_contract__train_passes_and_names_the_file():
    result = validate_file_with_contract(TRAIN, CONTRACT)

    assert result.success, result.summary()
    assert (result.rows, result.failures, result.data_path, result.suite_path) == (469, (), str(TRAIN), str(CONTRACT))


def test_validate_file_with_contract__missing_file_raises_data_error(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist"):
        validate_file_with_contract(tmp_path / "nope.csv", CONTRACT)


def test_validate_file_with_contract__empty_file_raises_data_error(tmp_path: Path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")

    with pytest.raises(DataError, match="empty"):
        validate_file_with_contract(empty, CONTRACT)


# --- Large files: the chunked gate ------------------------------------------------------


@pytest.mark.parametrize("scope", ["training", "batch"])
@pytest.mark.parametrize("name", readable_corpus())
def test_validate_file_in_chunks__same_findings_as_the_whole_file(name: str, scope: str):
    whole = validate_file_with_contract(CORPUS / name, CORPUS_CONTRACT, scope)  # type: ignore[arg-type]
    chunked = validate_file_in_chunks(CORPUS / name, CORPUS_CONTRACT, scope, chunk_rows=7)  # type: ignore[arg-type]

    assert findings(chunked) == findings(whole)


@pytest.mark.parametrize("seed", [1, 3, 5])
def test_validate_file_in_chunks__random_file_same_findings_as_the_whole_file(tmp_path: Path, seed: int):
    frame = random_frame(seed, rows=1_000)
    frame["income"] = frame["income"].fillna(1_000.0)
    frame.loc[frame.index % 5 == 0, "income"] = np.nan  # exactly max_null_rate: tolerated, as GX would
    path = tmp_path / "random.csv"
    frame.to_csv(path, index=False)

    whole = validate_file_with_contract(path, CORPUS_CONTRACT)
    chunked = validate_file_in_chunks(path, CORPUS_CONTRACT, chunk_rows=300)

    assert findings(chunked) == findings(whole)
    nulls = {failure.column for failure in whole.failures if failure.expectation.endswith("not_be_null")}
    assert "income" not in nulls


def _chunks(read, path: Path, chunk_rows: int) -> list[pd.DataFrame] | str:
    try:
        return [chunk.reset_index(drop=True) for chunk in read(path, chunk_rows)]
    except (DataError, FastReadRefused) as exc:
        return type(exc).__name__


def _whole_file_in_chunks(path: Path, chunk_rows: int) -> list[pd.DataFrame] | str:
    """The reference: the table pandas reads from the whole file, cut into chunks."""
    try:
        frame = load_table(path)
    except DataError:
        return "DataError"
    return [frame.iloc[start : start + chunk_rows].reset_index(drop=True) for start in range(0, len(frame), chunk_rows)]


def _assert_same_values(fast: list[pd.DataFrame], reference: list[pd.DataFrame]) -> None:
    # An int column's chunk without nulls stays int64 where the whole file is float64: the values are equal.
    assert [len(chunk) for chunk in fast] == [len(chunk) for chunk in reference]
    for ours, theirs in zip(fast, reference):
        pd.testing.assert_frame_equal(ours, theirs, check_dtype=False)


@pytest.mark.parametrize("name", sorted(path.name for path in CORPUS.glob("*.csv")))
def test_iter_table_fast__reads_as_pandas_or_refuses(name: str):
    numeric = [column.name for column in corpus_contract().columns if column.type in ("float", "int")]

    fast = _chunks(lambda path, rows: iter_table_fast(path, rows, numeric), CORPUS / name, 7)
    reference = _whole_file_in_chunks(CORPUS / name, 7)

    if fast != "FastReadRefused":
        assert not isinstance(reference, str), f"pandas refused {name} ({reference}), pyarrow did not"
        _assert_same_values(fast, reference)


@pytest.mark.parametrize("text", ["NAN", "+nan", "1e400", "inf", "9223372036854775808", "+7", "2024-01-01"])
def test_iter_table_fast__leaves_what_pandas_reads_otherwise_to_pandas(tmp_path: Path, text: str):
    path = tmp_path / "odd.csv"
    path.write_text(f"a,b\n{text},x\n{text},y\n")

    assert _chunks(iter_table_fast, path, 10) == "FastReadRefused"


def test_iter_table_fast__random_file_reads_as_pandas(tmp_path: Path):
    frame = random_frame(5, rows=1_000).assign(flag=lambda f: (f["age"] % 2 == 0).astype(object))
    frame.loc[::7, ["flag", "city", "income"]] = None
    frame["score"] = frame["score"].clip(upper=1.0)
    path = tmp_path / "clean.csv"
    frame.to_csv(path, index=False)

    fast = _chunks(iter_table_fast, path, 300)

    assert [len(chunk) for chunk in fast] == [300, 300, 300, 100]
    _assert_same_values(fast, _whole_file_in_chunks(path, 300))  # type: ignore[arg-type]


def test_gate__on_the_bundled_data_never_imports_gx():
    code = (
        "import sys; from mlops.contract import validate_with_contract, validate_file_in_chunks; "
        "from mlops.data import load_table; c = 'data/contracts/breast_cancer.yaml'; "
        "assert validate_with_contract(load_table('data/train.csv'), c).success; "
        "assert validate_file_in_chunks('data/train.csv', c).success; "
        "print('great_expectations' in sys.modules)"
    )

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)

    assert result.stdout.strip() == "False"
