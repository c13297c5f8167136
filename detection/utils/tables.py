"""Markdown and CSV tables from lists of cells."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; cells are written with str()."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def csv_table(rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> str:
    """CSV of the `fields` of each row: floats rounded to 4 decimals, None as empty."""
    out = io.StringIO()
    writer = csv.DictWriter(
        out, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                k: (round(v, 4) if isinstance(v, float) else "" if v is None else v)
                for k, v in row.items()
                if k in fields
            }
        )
    return out.getvalue()
