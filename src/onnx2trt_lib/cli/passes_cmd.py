"""`onnx2trt passes`: list the registered graph passes."""

from __future__ import annotations

from typing import Any

import click

from ..passes import registered_passes
from ..passes._registry import pass_description
from ._common import console, json_option, print_json


@click.command("passes")
@json_option
def command(as_json: bool) -> None:
    """List every registered pass (built-in and from plugins) with what it does."""
    table = registered_passes()
    rows: list[dict[str, Any]] = [
        {
            "name": name,
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "op_types": list(cls.op_types),
            "description": pass_description(cls),
        }
        for name, cls in table.items()
    ]
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    grid = Table("pass", "ops", "what it does", box=None, show_header=True)
    for row in rows:
        grid.add_row(row["name"], ",".join(row["op_types"]) or "*", row["description"])
    console.print(grid)
