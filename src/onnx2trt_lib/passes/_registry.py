"""Names -> pass classes: the built-in tuple plus third-party passes from an entry-point group.

Other packages add passes by declaring, in their pyproject.toml:

    [project.entry-points."onnx2trt_lib.passes"]
    my-pass = "my_package.passes:MyPass"

The entry-point name must equal the class's `name`. Duplicate names are refused.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points

from ..errors import UsageError
from ._infra import Pass
from .cleanup import CleanupPass
from .decompose_gather_elements import DecomposeGatherElementsPass
from .fix_resize import FixResizePass
from .fold_constants import FoldConstantsPass
from .infer_shapes import InferShapesPass
from .insert_qdq import InsertQdqPass
from .strip_scatter_reduction import StripScatterReductionPass
from .to_fp16 import ConvertToFp16Pass

ENTRY_POINT_GROUP = "onnx2trt_lib.passes"

BUILTIN_PASSES: tuple[type[Pass], ...] = (
    InferShapesPass,
    FoldConstantsPass,
    CleanupPass,
    FixResizePass,
    DecomposeGatherElementsPass,
    StripScatterReductionPass,
    InsertQdqPass,
    ConvertToFp16Pass,
)


def _check_pass_class(cls: type, origin: str) -> None:
    if not isinstance(
        cls, type
    ):  # e.g. an entry point naming an instance: get_pass could not build it
        raise UsageError(
            f"{origin}: {cls!r} is not a pass class but an instance; register the class"
        )
    if not isinstance(getattr(cls, "name", None), str) or not callable(getattr(cls, "run", None)):
        raise UsageError(
            f"{origin}: {cls!r} is not a pass class (needs a str `name` and a `run` method)"
        )


@functools.cache
def _entry_point_passes() -> tuple[type[Pass], ...]:
    found: list[type[Pass]] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        _check_pass_class(cls, f"entry point {ep.name!r}")
        if cls.name != ep.name:
            raise UsageError(
                f"entry point {ep.name!r} loads pass named {cls.name!r}; the names must match"
            )
        found.append(cls)
    return tuple(found)


def registered_passes(*, include_plugins: bool = True) -> dict[str, type[Pass]]:
    """All known passes by name, built-ins first. Raises UsageError on a duplicate name."""
    table: dict[str, type[Pass]] = {}
    candidates = BUILTIN_PASSES + (_entry_point_passes() if include_plugins else ())
    for cls in candidates:
        _check_pass_class(cls, "pass registry")
        if cls.name in table and table[cls.name] is not cls:
            raise UsageError(
                f"two passes are named {cls.name!r}: {table[cls.name].__module__} and {cls.__module__}"
            )
        table[cls.name] = cls
    return table


def get_pass(name: str, **options) -> Pass:
    """Instantiate the pass called `name` with keyword options."""
    table = registered_passes()
    if name not in table:
        raise UsageError(f"unknown pass {name!r}; known passes: {', '.join(sorted(table))}")
    return table[name](**options)


def pass_description(cls: type) -> str:
    doc = (
        (cls.__module__ and __import__(cls.__module__, fromlist=["_"]).__doc__) or cls.__doc__ or ""
    )
    first = doc.strip().splitlines()[0] if doc.strip() else ""
    return first.split(":", 1)[1].strip() if first.startswith("`") and ":" in first else first
