"""The vectorised contract checks give exactly GX's findings: GX is the reference.

Every readable file of the malformed corpus, as read (so numeric text columns reach
the checks unparsed) and as the contract gate sees it, in both scopes; and seeded
random frames with nulls, infinities, out-of-range values, unknown categories, mixed
``object`` columns and unusual dtypes (which go to GX). Then the chunked gate: its
pyarrow reader reads as pandas does or refuses, and its findings are the whole file's.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.contract import _parse_numbers, load_contract, to_suite
from mlops.contract_checks import check_frame
from mlops.data import FastReadRefused, iter_table_fast, load_table
from mlops.errors import DataError
from mlops.validation import validate_frame

CORPUS = Path(__file__).resolve().parent / "corpus"
CONTRACT = load_contract(CORPUS / "contract.yaml")


def _readable_corpus() -> list[str]:
    with open(CORPUS / "cases.csv", encoding="utf-8", newline="") as handle:
        return sorted({row["file"] for row in csv.DictReader(handle) if row["outcome"] != "DataError"})


def _findings(result) -> tuple:
    # repr: a NaN sample equals itself; the order within one column is GX's evaluation order.
    failures = sorted(repr(failure) for failure in result.failures)
    return result.success, result.rows, result.evaluated, result.suite_name, failures


def _assert_same_as_gx(frame: pd.DataFrame, suite: dict) -> None:
    assert _findings(check_frame(frame, suite)) == _findings(validate_frame(frame, suite))


@pytest.mark.parametrize("parsed", [False, True], ids=["as_read", "parsed"])
@pytest.mark.parametrize("scope", ["training", "batch"])
@pytest.mark.parametrize("name", _readable_corpus())
def test_check_frame__corpus_findings_are_gx_findings(name: str, scope: str, parsed: bool):
    frame = load_table(CORPUS / name)
    if scope == "batch" and CONTRACT.target in frame.columns:
        frame = frame.drop(columns=[CONTRACT.target])
    if parsed:
        frame, _ = _parse_numbers(frame, CONTRACT)

    _assert_same_as_gx(frame, to_suite(CONTRACT, scope))  # type: ignore[arg-type]


def _random_frame(seed: int, rows: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(10, 110, rows)
    income = rng.uniform(-10, 250_000, rows)
    income[rng.random(rows) < 0.15 * (seed % 3)] = np.nan
    score = rng.random(rows) * (1 + 0.01 * (seed % 2))
    score[rng.integers(0, rows, seed % 4)] = np.inf
    city = rng.choice(["lyon", "nice", "paris", "oslo" if seed % 2 else "nice"], rows).astype(object)
    city[rng.integers(0, rows, seed % 3)] = None
    label = rng.integers(0, 2 + seed % 2, rows)
    frame = pd.DataFrame({"age": age, "income": income, "score": score, "city": city, "label": label})
    if seed % 5 == 1:
        frame["city"] = frame["city"].where(rng.random(rows) > 0.05, 7)  # numbers among the text
    if seed % 5 == 2:
        frame["age"] = frame["age"].astype("int32")  # a dtype the checks hand to GX
    if seed % 5 == 3:
        frame["score"] = 0.5  # a constant feature
    if seed % 5 == 4:
        frame["label"] = frame["label"].astype(bool)  # a wrong, but numeric, dtype
    return frame


@pytest.mark.parametrize("seed", range(10))
def test_check_frame__random_frame_findings_are_gx_findings(seed: int):
    frame = _random_frame(seed)

    for scope in ("training", "batch"):
        _assert_same_as_gx(frame, to_suite(CONTRACT, scope))  # type: ignore[arg-type]


def test_check_frame__empty_and_nullable_edge_cases_are_gx_findings():
    empty = _random_frame(0).head(0)
    all_null = _random_frame(1).assign(income=np.nan, city=None)

    for frame in (empty, all_null):
        _assert_same_as_gx(frame, to_suite(CONTRACT, "training"))


def test_check_frame__unknown_expectation_is_evaluated_by_gx():
    frame = _random_frame(3)
    suite = {
        "name": "extra",
        "expectations": [
            {"type": "expect_column_mean_to_be_between", "kwargs": {"column": "age", "max_value": 1}},
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "age", "min_value": 20, "strict_min": True},
            },
        ],
    }

    result = check_frame(frame, suite)

    assert {failure.expectation for failure in result.failures} == {
        "expect_column_mean_to_be_between",
        "expect_column_values_to_be_between",
    }
    _assert_same_as_gx(frame, suite)


def test_check_frame__breast_cancer_training_data_passes_like_gx():
    repo = Path(__file__).resolve().parents[1]
    frame = load_table(repo / "data" / "train.csv")
    suite = to_suite(load_contract(repo / "data" / "contracts" / "breast_cancer.yaml"))

    _assert_same_as_gx(frame, suite)


# --- The pyarrow reader of the chunked gate ---------------------------------------------


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
    numeric = [column.name for column in CONTRACT.columns if column.type in ("float", "int")]

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
    frame = _random_frame(5, rows=1_000).assign(flag=lambda f: (f["age"] % 2 == 0).astype(object))
    frame.loc[::7, ["flag", "city", "income"]] = None
    frame["score"] = frame["score"].clip(upper=1.0)
    path = tmp_path / "clean.csv"
    frame.to_csv(path, index=False)

    fast = _chunks(iter_table_fast, path, 300)

    assert [len(chunk) for chunk in fast] == [300, 300, 300, 100]
    _assert_same_values(fast, _whole_file_in_chunks(path, 300))  # type: ignore[arg-type]


@pytest.mark.parametrize("scope", ["training", "batch"])
@pytest.mark.parametrize("name", _readable_corpus())
def test_validate_file_in_chunks__same_findings_as_the_whole_file(name: str, scope: str):
    from mlops.contract import validate_file_in_chunks, validate_file_with_contract

    contract = CORPUS / "contract.yaml"
    whole = validate_file_with_contract(CORPUS / name, contract, scope)  # type: ignore[arg-type]
    chunked = validate_file_in_chunks(CORPUS / name, contract, scope, chunk_rows=7)  # type: ignore[arg-type]

    assert _findings(chunked) == _findings(whole)


@pytest.mark.parametrize("seed", [1, 3, 5])
def test_validate_file_in_chunks__random_file_same_findings_as_the_whole_file(tmp_path: Path, seed: int):
    from mlops.contract import validate_file_in_chunks, validate_file_with_contract

    frame = _random_frame(seed, rows=1_000)
    frame["income"] = frame["income"].fillna(1_000.0)
    frame.loc[frame.index % 5 == 0, "income"] = np.nan  # exactly max_null_rate: tolerated, as GX would
    path = tmp_path / "random.csv"
    frame.to_csv(path, index=False)

    whole = validate_file_with_contract(path, CORPUS / "contract.yaml")
    chunked = validate_file_in_chunks(path, CORPUS / "contract.yaml", chunk_rows=300)

    assert _findings(chunked) == _findings(whole)
    nulls = {failure.column for failure in whole.failures if failure.expectation.endswith("not_be_null")}
    assert "income" not in nulls


def test_validate_with_contract__leaves_the_callers_frame_as_it_was():
    from mlops.contract import validate_with_contract

    frame = load_table(CORPUS / "unparseable_numbers.csv")
    before = frame.copy()

    result = validate_with_contract(frame, CORPUS / "contract.yaml", scope="batch")

    assert [failure.expectation for failure in result.failures][:1] == ["values_parse_as_numbers"]
    pd.testing.assert_frame_equal(frame, before)


def test_gate__on_the_bundled_data_never_imports_gx():
    import subprocess
    import sys

    code = (
        "import sys; from mlops.contract import validate_with_contract, validate_file_in_chunks; "
        "from mlops.data import load_table; c = 'data/contracts/breast_cancer.yaml'; "
        "assert validate_with_contract(load_table('data/train.csv'), c).success; "
        "assert validate_file_in_chunks('data/train.csv', c).success; "
        "print('great_expectations' in sys.modules)"
    )
    repo = Path(__file__).resolve().parents[1]

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, check=True)

    assert result.stdout.strip() == "False"
