"""The contract as a Great Expectations suite: a plain JSON-ready dict, generated, never hand-edited.

Each check of the contract becomes one GX expectation, its severity mapped to GX's
(``block`` → ``critical``, ``warn`` → ``warning``) and its kind kept in the
expectation's ``meta.check``. Both evaluators (:mod:`mlops.contract.checks`,
:mod:`mlops.contract.gx`) run this suite; ``mlops contract suite`` writes it next to
the contract so it is reviewed like code.

Example::

    write_suite(to_suite(load_contract("data/contracts/breast_cancer.yaml")), "data/expectations/breast_cancer.json")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlops.contract.spec import ColumnContract, Contract, Scope, Severity, contract_file

__all__ = ["NUMERIC_TYPES", "TEXT_TYPES", "to_suite", "write_suite"]

# Any numeric column read from a CSV file is int64 or float64; GX maps these names to both.
NUMERIC_TYPES = ("float", "int")
# "str" matches text in object columns, "StringDtype" pandas' python-backed string dtype.
# No name matches the pyarrow-backed one (pandas 3's default) in GX 1.24.
TEXT_TYPES = ("str", "StringDtype")
_GX_SEVERITY = {"block": "critical", "warn": "warning"}


def to_suite(contract: Contract, scope: Scope = "training") -> dict[str, Any]:
    """The GX suite that enforces ``contract``; ``batch`` checks features only, any row count.

    ``training`` covers every column, ``min_rows``, the target's classes and
    all-constant features; ``batch`` (scoring, monitoring) is what a batch of
    requests must meet, so no target and no row count.
    """
    columns = contract.columns if scope == "training" else contract.features
    names = sorted(column.name for column in columns)
    expectations = [_gx("expect_table_columns_to_match_set", "block", "columns", column_set=names)]
    if scope == "training":
        expectations.append(
            _gx("expect_table_row_count_to_be_between", "block", "min_rows", min_value=contract.min_rows)
        )
    for column in sorted(columns, key=lambda column: column.name):
        expectations += _column_expectations(column, scope)
    if scope == "training" and contract.task == "classification":
        kwargs = {"column": contract.target, "min_value": 2}
        expectations.append(_gx("expect_column_unique_value_count_to_be_between", "block", "classes", **kwargs))
    meta = {"generated_by": "mlops.contract.to_suite", "contract_version": contract.version, "scope": scope}
    return {"name": contract.name, "id": None, "expectations": expectations, "meta": meta, "notes": None}


def _column_expectations(column: ColumnContract, scope: Scope) -> list[dict[str, Any]]:
    name = column.name
    types = {"float": NUMERIC_TYPES, "int": NUMERIC_TYPES, "str": TEXT_TYPES, "bool": ("bool",)}[column.type]
    nulls: dict[str, Any] = {"column": name}
    if column.nullable:
        nulls["mostly"] = round(1.0 - (column.max_null_rate if column.max_null_rate is not None else 1.0), 6)
    checks = [
        _gx(
            "expect_column_values_to_be_in_type_list",
            column.severity_of("type"),
            "type",
            column=name,
            type_list=list(types),
        ),
    ]
    if not column.nullable or nulls["mostly"] > 0:
        checks.insert(
            0, _gx("expect_column_values_to_not_be_null", column.severity_of("nullable"), "nullable", **nulls)
        )
    if column.min is not None or column.max is not None:
        bounds = {"min_value": column.min, "max_value": column.max}
        checks.append(
            _gx("expect_column_values_to_be_between", column.severity_of("range"), "range", column=name, **bounds)
        )
    if column.categories is not None:
        kwargs: dict[str, Any] = {"column": name, "value_set": list(column.categories)}
        checks.append(
            _gx("expect_column_values_to_be_in_set", column.severity_of("categories"), "categories", **kwargs)
        )
    if scope == "training" and column.type != "bool" and not column.categories:
        kwargs = {"column": name, "min_value": 2}
        checks.append(
            _gx("expect_column_unique_value_count_to_be_between", column.severity_of("constant"), "constant", **kwargs)
        )
    return checks


def _gx(kind: str, severity: Severity, check: str, **kwargs: Any) -> dict[str, Any]:
    kwargs = {key: value for key, value in kwargs.items() if value is not None}
    return {"type": kind, "kwargs": kwargs, "meta": {"check": check}, "severity": _GX_SEVERITY[severity]}


def write_suite(suite: dict[str, Any], path: str | Path | None) -> Path:
    """Write a suite as pretty, key-sorted JSON, so regenerating it gives a readable diff."""
    path = contract_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(suite, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
