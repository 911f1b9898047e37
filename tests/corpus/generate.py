"""Regenerate the malformed-file corpus: ``python tests/corpus/generate.py``.

Each file is the 30-row ``valid.csv`` with one defect; ``cases.csv`` holds the exact
outcome expected of each (read by tests/contract/test_corpus.py).
"""

from __future__ import annotations

import random
from pathlib import Path

HERE = Path(__file__).parent
HEADER = ["age", "income", "score", "city", "label"]
CITIES = ["lyon", "nice", "paris"]


def rows(count: int = 30) -> list[list[str]]:
    rng = random.Random(3)
    return [
        [str(rng.randint(18, 90)), f"{rng.uniform(1000, 150000):.2f}", f"{rng.random():.3f}", CITIES[i % 3], str(i % 2)]
        for i in range(count)
    ]


def csv_text(table: list[list[str]], header: list[str] = HEADER, sep: str = ",", newline: str = "\n") -> str:
    return newline.join(sep.join(row) for row in [header, *table]) + newline


def with_value(column: str, value: str, at: range = range(3)) -> list[list[str]]:
    table = rows()
    for index in at:
        table[index][HEADER.index(column)] = value
    return table


def drop(column: str) -> tuple[list[str], list[list[str]]]:
    keep = [i for i, name in enumerate(HEADER) if name != column]
    return [HEADER[i] for i in keep], [[row[i] for i in keep] for row in rows()]


def files() -> dict[str, bytes]:
    text = {
        "valid.csv": csv_text(rows()),
        "empty.csv": "",
        "header_only.csv": csv_text([]),
        "semicolon.csv": csv_text(rows(), sep=";"),
        "tab_delimited.csv": csv_text(rows(), sep="\t"),
        "unparseable_numbers.csv": csv_text(with_value("score", "abc", range(2))),
        "duplicated_columns.csv": csv_text([row + [row[0]] for row in rows()], header=HEADER + ["age"]),
        "missing_column.csv": csv_text(drop("score")[1], header=drop("score")[0]),
        "target_absent.csv": csv_text(drop("label")[1], header=drop("label")[0]),
        "extra_column.csv": csv_text([row + ["x"] for row in rows()], header=HEADER + ["comment"]),
        "nan_values.csv": csv_text(with_value("score", "")),
        "nullable_within_rate.csv": csv_text(with_value("income", "", range(2))),
        "nullable_over_rate.csv": csv_text(with_value("income", "", range(10))),
        "infinity.csv": csv_text(with_value("score", "inf", range(2))),
        "out_of_range.csv": csv_text(with_value("age", "150", range(4))),
        "negative_income.csv": csv_text(with_value("income", "-5.0", range(1))),
        "unseen_category.csv": csv_text(with_value("city", "oslo", range(2))),
        "constant_column.csv": csv_text(with_value("score", "0.5", range(30))),
        "one_class_target.csv": csv_text(with_value("label", "1", range(30))),
        "unknown_label.csv": csv_text(with_value("label", "2", range(1))),
        "too_few_rows.csv": csv_text(rows(5)),
        "ragged_rows.csv": csv_text(rows()[:10]) + "1,2,3,4,5,6,7\n" + csv_text(rows()[10:]).split("\n", 1)[1],
        "crlf_line_endings.csv": csv_text(rows(), newline="\r\n"),
    }
    raw = {name: content.encode("utf-8") for name, content in text.items()}
    raw["latin1.csv"] = csv_text(with_value("city", "nîmes", range(1))).encode("latin-1")
    raw["utf8_bom.csv"] = b"\xef\xbb\xbf" + raw["valid.csv"]
    raw["binary.csv"] = bytes(random.Random(5).randrange(256) for _ in range(512))
    return raw


if __name__ == "__main__":
    for name, content in files().items():
        (HERE / name).write_bytes(content)
        print(name)
