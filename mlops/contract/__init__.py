"""The data contract: one readable YAML file per dataset, enforced at every stage.

The same contract drives the training gate, batch scoring, monitoring batches and the
serving request check (:mod:`mlops.request_check`). Its parts, each a module, in the
order they depend on one another:

- :mod:`~mlops.contract.results`: what a run found (:class:`ValidationResult`, its failures);
- :mod:`~mlops.contract.spec`: the contract file and its models (:class:`Contract`, :func:`load_contract`);
- :mod:`~mlops.contract.draft`: a first contract inferred from training data (:func:`draft_contract`);
- :mod:`~mlops.contract.suite`: the contract as a Great Expectations suite (:func:`to_suite`);
- :mod:`~mlops.contract.gx`: GX evaluating a suite, the reference (:func:`validate_frame`);
- :mod:`~mlops.contract.checks`: the same findings, vectorised, ~50x faster (:func:`check_frame`);
- :mod:`~mlops.contract.report`: the HTML report of a run (:func:`write_html_report`);
- :mod:`~mlops.contract.validate`: the gate the library calls (:func:`validate_with_contract`, chunked files).

Importing the package does not load Great Expectations: GX is imported when a suite is
run by it (only what the fast checks hand to it).

Example::

    contract = draft_contract(load_table("data/train.csv"), target="target", name="breast_cancer")
    write_contract(contract, "data/contracts/breast_cancer.yaml")
    result = validate_with_contract(frame, "data/contracts/breast_cancer.yaml")
"""

from __future__ import annotations

from mlops.contract.checks import check_frame
from mlops.contract.draft import DEFAULT_MARGIN, draft_contract, infer_task
from mlops.contract.gx import validate_frame
from mlops.contract.report import write_html_report
from mlops.contract.results import CheckedExpectation, FailedExpectation, ValidationResult
from mlops.contract.spec import (
    DEFAULT_SEVERITY,
    ColumnContract,
    Contract,
    Role,
    Scope,
    Severity,
    contract_diff,
    contract_file,
    contract_files,
    contract_to_yaml,
    excluded_columns_note,
    load_contract,
    write_contract,
)
from mlops.contract.suite import to_suite, write_suite
from mlops.contract.validate import (
    DEFAULT_CHUNK_ROWS,
    check_with_report,
    validate_file_in_chunks,
    validate_file_with_contract,
    validate_with_contract,
)

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "DEFAULT_MARGIN",
    "DEFAULT_SEVERITY",
    "CheckedExpectation",
    "ColumnContract",
    "Contract",
    "FailedExpectation",
    "Role",
    "Scope",
    "Severity",
    "ValidationResult",
    "check_frame",
    "check_with_report",
    "contract_diff",
    "contract_file",
    "contract_files",
    "contract_to_yaml",
    "draft_contract",
    "excluded_columns_note",
    "infer_task",
    "load_contract",
    "to_suite",
    "validate_file_in_chunks",
    "validate_file_with_contract",
    "validate_frame",
    "validate_with_contract",
    "write_contract",
    "write_html_report",
    "write_suite",
]
