"""The bundled regression example: scikit-learn's diabetes data (no download).

Writes ``data/diabetes/train.csv`` (442 rows, 10 numeric features, a continuous
``target``: disease progression after one year) and its expectation suite
``data/expectations/diabetes.json``, drafted with :func:`mlops.validation.draft_suite`.
The drafted target check (a set of observed labels) suits classes, not a
continuous target, so it is replaced by a range check widened like the features'.

Regenerate (byte-identical) from the repository root::

    python examples/diabetes.py

Train on it with the config beside this file::

    mlops --config examples/diabetes.yaml train
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_diabetes():
    """The diabetes table with a ``target`` column, values rounded for a stable CSV."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame
    return frame.round(6)


def diabetes_suite(frame) -> dict:
    """The drafted suite, with the target checked by range instead of by label set."""
    from mlops.validation import draft_suite

    suite = draft_suite(frame, target="target", name="diabetes")
    low, high = float(frame["target"].min()), float(frame["target"].max())
    spread = (high - low) * 0.1
    for expectation in suite["expectations"]:
        if expectation["type"] == "expect_column_values_to_be_in_set" and expectation["kwargs"]["column"] == "target":
            expectation["type"] = "expect_column_values_to_be_between"
            expectation["kwargs"] = {"column": "target", "min_value": max(0.0, low - spread), "max_value": high + spread}
    return suite


def write_diabetes(root: Path = REPO) -> tuple[Path, Path]:
    """Write the data and the suite under ``root``; return their paths."""
    from mlops.validation import write_suite

    frame = make_diabetes()
    data_path = root / "data" / "diabetes" / "train.csv"
    data_path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(data_path, index=False, float_format="%.6g", lineterminator="\n")
    suite_path = write_suite(diabetes_suite(frame), root / "data" / "expectations" / "diabetes.json")
    return data_path, suite_path


if __name__ == "__main__":
    for written in write_diabetes(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO):
        print(written)
