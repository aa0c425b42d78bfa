from __future__ import annotations

import time

import numpy as np
import onnx_graphsurgeon as gs
import pytest
from helpers import conv_relu_model, run_ort

from onnx2trt_lib.errors import PassError, UsageError
from onnx2trt_lib.passes import PassManager, _registry, get_pass, registered_passes, result


class _RenamePass:
    name = "rename-relu"
    op_types = ("Relu",)

    def run(self, graph: gs.Graph):
        changed = 0
        for node in graph.nodes:
            if node.op == "Relu" and node.name != "renamed":
                node.name = "renamed"
                changed += 1
        return result(self.name, {"renamed": changed})


class _BrokenPass:
    name = "broken"
    op_types = ()

    def run(self, graph):
        raise ValueError("cannot cope")


def test_result_modified_is_exact() -> None:
    assert not result("p", {"a": 0, "b": 0}).modified
    assert result("p", {"a": 0, "b": 2}).modified


def test_pipeline_reports_per_pass_and_cleans_up() -> None:
    model = conv_relu_model()
    started = time.perf_counter()
    fixed, report = PassManager([get_pass("fold-constants"), _RenamePass()]).run(model)
    wall = time.perf_counter() - started
    names = [r.result.name for r in report.records]
    assert names == ["fold-constants", "rename-relu"]
    assert report.records[0].result.counts["folded_tensors"] == 1  # bias = b0 + b1
    assert report.records[1].result.counts["renamed"] == 1
    ops = [n.op_type for n in fixed.graph.node]
    assert "Sigmoid" not in ops and "Add" not in ops  # dead branch and folded Add removed
    assert report.nodes_before == 4 and report.nodes_after == 2
    assert all(r.seconds >= 0 for r in report.records)
    assert sum(r.seconds for r in report.records) <= wall  # each pass's own time, not a clock
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    np.testing.assert_allclose(run_ort(model, feeds)[0], run_ort(fixed, feeds)[0], atol=1e-6)
    # idempotent: the second run changes nothing and returns the very same model
    again, report2 = PassManager([get_pass("fold-constants"), _RenamePass()]).run(fixed)
    assert not report2.modified and again is fixed


def test_input_model_never_mutated() -> None:
    model = conv_relu_model()
    before = model.SerializeToString()
    PassManager([get_pass("fold-constants"), get_pass("cleanup")]).run(model)
    assert model.SerializeToString() == before


def test_failing_pass_is_named_with_predecessors() -> None:
    with pytest.raises(
        PassError, match=r"pass 'broken' failed \(passes run before it: cleanup\): cannot cope"
    ):
        PassManager([get_pass("cleanup"), _BrokenPass()]).run(conv_relu_model())


def test_registry_refuses_duplicates_and_unknown(monkeypatch) -> None:
    with pytest.raises(UsageError, match="unknown pass 'nope'"):
        get_pass("nope")

    class Dup:
        name = "cleanup"
        op_types = ()

        def run(self, graph):
            return result(self.name)

    monkeypatch.setattr(_registry, "_entry_point_passes", lambda: (Dup,))
    with pytest.raises(UsageError, match="two passes are named 'cleanup'"):
        registered_passes()


def test_entry_point_passes_are_loaded(monkeypatch) -> None:
    class FakeEntryPoint:
        name = "rename-relu"

        def load(self):
            return _RenamePass

    monkeypatch.setattr(
        _registry,
        "entry_points",
        lambda group: [FakeEntryPoint()] if group == _registry.ENTRY_POINT_GROUP else [],
    )
    _registry._entry_point_passes.cache_clear()
    try:
        table = registered_passes()
        assert table["rename-relu"] is _RenamePass
        assert isinstance(get_pass("rename-relu"), _RenamePass)
    finally:
        _registry._entry_point_passes.cache_clear()


def test_entry_point_name_must_match_class_name(monkeypatch) -> None:
    class Mismatch:
        name = "other"

        def load(self):
            return _RenamePass

    monkeypatch.setattr(_registry, "entry_points", lambda group: [Mismatch()])
    _registry._entry_point_passes.cache_clear()
    try:
        with pytest.raises(UsageError, match="names must match"):
            registered_passes()
    finally:
        _registry._entry_point_passes.cache_clear()


def test_modifying_run_leaves_input_bytes_alone() -> None:
    from pathlib import Path

    import onnx

    path = (
        Path(__file__).parents[1] / "data" / "models" / "resize_bicubic_2x3_ac1_legacy11_dyn.onnx"
    )
    model = onnx.load(path)
    before = model.SerializeToString()
    _, report = PassManager([get_pass("fix-resize")]).run(model)
    assert report.modified
    assert model.SerializeToString() == before


def test_progress_names_each_step_as_it_starts() -> None:
    steps = []
    model = conv_relu_model()
    fixed, _ = PassManager(
        [get_pass("fold-constants"), _RenamePass()], progress=lambda *a: steps.append(a)
    ).run(model)
    assert steps == [
        ("import", 0, 4),
        ("fold-constants", 1, 4),
        ("rename-relu", 2, 4),
        ("export", 3, 4),
    ]
    steps.clear()
    PassManager([_RenamePass()], progress=lambda *a: steps.append(a)).run(fixed)
    assert steps == [("import", 0, 3), ("rename-relu", 1, 3)]  # nothing changed: no export step
