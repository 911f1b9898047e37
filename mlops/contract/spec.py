"""The data contract itself: one readable YAML file per dataset, and the models that check it.

A contract names the columns (type, nullability, range, allowed categories, role),
the target, the task type and the minimum row count, each check with a severity:
``block`` (the gate fails) or ``warn`` (reported, the run continues). Every problem
with the file is a :class:`~mlops.errors.ConfigError` naming the fix.

Default severities (documented in README, "Your data contract"): a wrong type, nulls
in a non-nullable column and a value outside the range ``block``; an unseen category
and an all-constant feature ``warn``.

Example::

    contract = load_contract("data/contracts/breast_cancer.yaml")
    write_contract(contract.model_copy(update={"min_rows": 100}), "data/contracts/breast_cancer.yaml")
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlops.errors import ConfigError

if TYPE_CHECKING:
    from mlops.config import Settings

__all__ = [
    "DEFAULT_SEVERITY",
    "Check",
    "ColumnContract",
    "Contract",
    "Role",
    "Scope",
    "Severity",
    "contract_diff",
    "contract_file",
    "contract_files",
    "contract_to_yaml",
    "excluded_columns_note",
    "load_contract",
    "write_contract",
]

Severity = Literal["block", "warn"]
Check = Literal["type", "nullable", "range", "categories", "constant"]
# What a column is for: a model input, or kept out of the features (and said so by the draft).
Role = Literal["feature", "id", "time", "ignore"]
# Where the contract is applied: a training table (every column, its size, the target's classes)
# or a batch to score or monitor (the features only, any row count).
Scope = Literal["training", "batch"]
DEFAULT_SEVERITY: dict[str, Severity] = {
    "type": "block",
    "nullable": "block",
    "range": "block",
    "categories": "warn",
    "constant": "warn",
}
_FIX = "Fix the file, or draft one with `mlops contract draft DATA`."


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ColumnContract(_Strict):
    """What one column must look like; ``severity`` overrides the default per check."""

    name: str
    type: Literal["float", "int", "str", "bool"]
    role: Role = Field("feature", description="feature, or id / time / ignore: checked, but not a model input.")
    nullable: bool = False
    max_null_rate: float | None = Field(None, ge=0.0, le=1.0, description="Tolerated share of nulls if nullable.")
    # int before float, so an integer column's bounds stay integers (pydantic tries in order).
    min: int | float | None = None
    max: int | float | None = None
    categories: list[str | int | float | bool] | None = None
    severity: dict[Check, Severity] = {}

    def severity_of(self, check: str) -> Severity:
        return self.severity.get(check, DEFAULT_SEVERITY[check])  # type: ignore[call-overload]


class Contract(_Strict):
    """One dataset's contract: its columns, target, task type and minimum size."""

    version: int = Field(1, ge=1, description="Bump when the contract changes meaning.")
    name: str
    target: str
    task: Literal["classification", "regression"]
    min_rows: int = Field(1, ge=1)
    columns: list[ColumnContract]

    @property
    def features(self) -> list[ColumnContract]:
        """The model's inputs: every column but the target and those with another role."""
        return [column for column in self.columns if column.name != self.target and column.role == "feature"]

    @property
    def target_column(self) -> ColumnContract:
        return next(column for column in self.columns if column.name == self.target)

    @property
    def excluded(self) -> list[ColumnContract]:
        """Columns checked by the gate but kept out of the features (identifiers, dates, ignored)."""
        return [column for column in self.columns if column.name != self.target and column.role != "feature"]


# --- Files -------------------------------------------------------------------------


def contract_file(path: str | Path | None) -> Path:
    """``path`` as a Path; None (a config that was never loaded, so no default filled in) is a ConfigError."""
    if path is None:
        raise ConfigError(f"No data contract is configured: set data.contract in mlops.yaml. {_FIX}")
    return Path(path)


def load_contract(path: str | Path | None) -> Contract:
    """Read and check a contract file; every problem is a :class:`ConfigError` naming the fix."""
    path = contract_file(path)
    if not path.is_file():
        raise ConfigError(f"Contract file {path} does not exist. Check data.contract in the config. {_FIX}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        contract = Contract.model_validate(raw)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Contract file {path} is not valid YAML: {exc}. {_FIX}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"Contract file {path} is invalid: {problems}. {_FIX}") from None
    if contract.target not in {column.name for column in contract.columns}:
        raise ConfigError(f"Contract file {path}: target '{contract.target}' is not among its columns. {_FIX}")
    return contract


def contract_to_yaml(contract: Contract) -> str:
    """The contract as stable, readable YAML (keys in declaration order, defaults omitted)."""
    data = contract.model_dump(mode="json", exclude_defaults=True)
    data = {"version": contract.version, **data}
    data["columns"] = [column.model_dump(mode="json", exclude_defaults=True) for column in contract.columns]
    header = "# Data contract: see README, 'Your data contract'. Severities: block | warn.\n"
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def write_contract(contract: Contract, path: str | Path | None) -> Path:
    path = contract_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(contract_to_yaml(contract), encoding="utf-8")
    return path


def contract_diff(current: Contract, drafted: Contract, path: str | Path | None = "contract") -> str:
    """A unified diff of what a new draft would change; empty when nothing would."""
    lines = difflib.unified_diff(
        contract_to_yaml(current).splitlines(keepends=True),
        contract_to_yaml(drafted).splitlines(keepends=True),
        fromfile=f"{path} (current)",
        tofile=f"{path} (draft)",
    )
    return "".join(lines)


def contract_files(settings: Settings) -> list[Path]:
    """The contract and its generated GX suite, to log with every training run."""
    return [path for path in (settings.data.contract, settings.data.suite) if path is not None and path.is_file()]


def excluded_columns_note(contract: Contract) -> str | None:
    """One line saying which columns the draft kept out of the features, and why."""
    reasons = {"id": "unique per row: an identifier", "time": "a date or time", "ignore": "no values"}
    if not contract.excluded:
        return None
    listed = "; ".join(f"{column.name} ({reasons[column.role]})" for column in contract.excluded)
    return f"Not used as features: {listed}. Set role: feature in the contract to use one."
