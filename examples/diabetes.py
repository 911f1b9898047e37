"""The bundled regression example: scikit-learn's diabetes data (no download).

Writes ``data/diabetes/train.csv`` (442 rows, 10 numeric features, a continuous
``target``: disease progression after one year), its data contract
``data/contracts/diabetes.yaml`` (drafted: a continuous target is checked by range,
the task is regression) and the GX suite generated from it.

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


def write_diabetes(root: Path = REPO) -> tuple[Path, Path, Path]:
    """Write the data, its data contract and the GX suite generated from it under ``root``."""
    from mlops.contract import draft_contract, to_suite, write_contract, write_suite
    from mlops.data import load_table

    frame = make_diabetes()
    data_path = root / "data" / "diabetes" / "train.csv"
    data_path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(data_path, index=False, float_format="%.6g", lineterminator="\n")
    # Drafted from the file as written, so the types are the ones every reader sees.
    contract = draft_contract(load_table(data_path), target="target", name="diabetes")
    contract_path = write_contract(contract, root / "data" / "contracts" / "diabetes.yaml")
    suite_path = write_suite(to_suite(contract), root / "data" / "expectations" / "diabetes.json")
    return data_path, contract_path, suite_path


if __name__ == "__main__":
    for written in write_diabetes(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO):
        print(written)
