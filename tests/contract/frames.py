"""Data for the contract tests: the malformed-file corpus and seeded random frames that break its contract.

    frame = random_frame(3)
    assert findings(check_frame(frame, suite)) == findings(validate_frame(frame, suite))
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from mlops.contract import Contract, ValidationResult, load_contract

__all__ = ["CORPUS", "CORPUS_CONTRACT", "REPO", "corpus_contract", "findings", "random_frame", "readable_corpus"]

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "corpus"
CORPUS_CONTRACT = CORPUS / "contract.yaml"


def corpus_contract() -> Contract:
    return load_contract(CORPUS_CONTRACT)


def readable_corpus() -> list[str]:
    """The corpus files pandas can read (the others are a DataError before any check runs)."""
    with open(CORPUS / "cases.csv", encoding="utf-8", newline="") as handle:
        return sorted({row["file"] for row in csv.DictReader(handle) if row["outcome"] != "DataError"})


def findings(result: ValidationResult) -> tuple:
    """What two evaluators must agree on; repr, so a NaN sample equals itself."""
    # The order within one column is GX's evaluation order.
    failures = sorted(repr(failure) for failure in result.failures)
    return result.success, result.rows, result.evaluated, result.suite_name, failures


def random_frame(seed: int, rows: int = 400) -> pd.DataFrame:
    """The corpus contract's columns with nulls, infinities, out-of-range values, unknown categories and odd dtypes."""
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
