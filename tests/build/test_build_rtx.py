"""Real builds with TensorRT-RTX on CPU: sidecar, engine cache, profiles, and every bad input."""

from __future__ import annotations

import hashlib
import json
import os
import warnings

import onnx
import pytest

from onnx2trt_lib._io import OutputError
from onnx2trt_lib.build import (
    BuildConfig,
    Builder,
    EngineFileError,
    engine_bytes_from_network,
    inspect_engine,
    load_engine,
    network_from_onnx,
    profiles_from_specs,
    read_sidecar,
)
from onnx2trt_lib.build import engine as engine_module
from onnx2trt_lib.build.engine import _load_timing_cache
from onnx2trt_lib.errors import BuildError, ModelLoadError, UsageError

pytestmark = pytest.mark.trt

DYN = profiles_from_specs(["x:1x3x8x8/2x3x8x8/4x3x8x8"])


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_static_build_and_sidecar(tmp_path, rtx, save, models):
    path = save(models["conv_relu"](1))
    out = tmp_path / "m.engine"
    config = BuildConfig(workspace=1 << 26, builder_optimization_level=1)
    res = Builder(config).build(path, out)

    data = out.read_bytes()
    assert res.path == out and not res.cache_hit and data == res.engine and len(data) > 1000
    side = json.loads((tmp_path / "m.engine.json").read_text())
    assert side == read_sidecar(out)
    assert side["backend"] == {
        "name": "tensorrt-rtx",
        "module": "tensorrt_rtx",
        "version": rtx.__version__,
    }
    assert side["target"] == "portable"
    assert side["inputs"] == [{"name": "x", "dtype": "float32", "shape": [1, 3, 8, 8]}]
    assert side["outputs"] == [{"name": "y", "dtype": "float32", "shape": [1, 4, 8, 8]}]
    assert side["profiles"] == []
    assert side["onnx_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert side["engine_sha256"] == hashlib.sha256(data).hexdigest() and side["engine_size"] == len(
        data
    )
    assert BuildConfig.from_dict(side["config"]) == config
    assert _leftovers(tmp_path) == []


def test_dynamic_batch_profiles_in_sidecar(tmp_path, rtx, save, models):
    path = save(models["two_input_matmul"]())
    profiles = profiles_from_specs(
        ["a:1x16/4x16/8x16,b:1x8/4x8/8x8"],
        min_shapes=["a:16x16,b:16x8"],
        opt_shapes=["a:32x16,b:32x8"],
        max_shapes=["a:64x16,b:64x8"],
    )
    res = Builder(BuildConfig(profiles=profiles), cache_dir=False).build(
        path, tmp_path / "mm.engine"
    )
    side = res.sidecar
    assert [t["shape"] for t in side["inputs"]] == [[-1, 16], [-1, 8]]
    assert len(side["profiles"]) == 2
    assert side["profiles"][1][0] == {
        "name": "a",
        "min": [16, 16],
        "opt": [32, 16],
        "max": [64, 16],
    }


def test_second_identical_build_is_a_cache_hit(tmp_path, rtx, save, models, build_calls):
    path = save(models["conv_relu"]("N"))
    config = BuildConfig(profiles=DYN)
    first = Builder(config).build(path, tmp_path / "a.engine")
    assert len(build_calls) == 1 and not first.cache_hit
    second = Builder(config).build(path, tmp_path / "b.engine")
    assert len(build_calls) == 1, "the cache hit must not call the builder"
    assert second.cache_hit and second.engine == first.engine
    assert (tmp_path / "b.engine").read_bytes() == first.engine
    assert read_sidecar(tmp_path / "b.engine")["engine_sha256"] == first.sidecar["engine_sha256"]
    # the same model passed as a ModelProto: onnx.save wrote its deterministic serialisation, so it hits too
    assert Builder(config).build(onnx.load(str(path))).cache_hit
    assert len(build_calls) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"workspace": 1 << 25},
        {"builder_optimization_level": 0},
        {"profiles": profiles_from_specs(["x:1x3x8x8/2x3x8x8/8x3x8x8"])},
        {"fp16": True},
    ],
    ids=["workspace", "opt-level", "profile", "fp16"],
)
def test_changed_config_rebuilds(tmp_path, rtx, save, models, build_calls, change):
    path = save(models["conv_relu"]("N"))
    base = BuildConfig(profiles=DYN)
    Builder(base).build(path)
    Builder(base.replace(**change)).build(path)
    assert len(build_calls) == 2
    Builder(base.replace(timing_cache=str(tmp_path / "t.cache"))).build(
        path
    )  # timing cache is not in the key
    assert len(build_calls) == 2


def test_changed_onnx_rebuilds_and_damaged_cache_entry_rebuilds(
    tmp_path, rtx, save, models, build_calls, isolated_engine_cache
):
    config = BuildConfig()
    Builder(config).build(save(models["conv_relu"](1, seed=0), "a.onnx"))
    Builder(config).build(save(models["conv_relu"](1, seed=1), "b.onnx"))
    assert len(build_calls) == 2
    (entry,) = [
        p
        for p in isolated_engine_cache.glob("*.engine")
        if read_sidecar(p)["onnx_source"].endswith("a.onnx")
    ]
    entry.write_bytes(entry.read_bytes()[:-10] + b"corrupted!")
    res = Builder(config).build(tmp_path / "a.onnx")
    assert len(build_calls) == 3 and not res.cache_hit
    assert Builder(config).build(tmp_path / "a.onnx").cache_hit  # repaired by the rebuild


def test_cache_off_always_builds(tmp_path, rtx, save, models, build_calls, isolated_engine_cache):
    path = save(models["conv_relu"](1))
    Builder(cache_dir=False).build(path)
    Builder(cache_dir=False).build(path)
    assert len(build_calls) == 2 and not isolated_engine_cache.exists()


def test_input_model_is_not_modified(rtx, models):
    model = models["conv_relu"](1)
    before = model.SerializeToString()
    Builder(BuildConfig(fp16=True), cache_dir=False).build(model)
    assert model.SerializeToString() == before


def test_dynamic_input_without_profile_names_it(tmp_path, rtx, save, models):
    path = save(models["conv_relu"]("N"))
    with pytest.raises(
        UsageError,
        match=r"input 'x' has dynamic shape \?x3x8x8 and needs a shape range: --shapes x:",
    ):
        Builder(cache_dir=False).build(path, tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists() and not (tmp_path / "m.engine.json").exists()


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (
            "a:1x16/4x16/8x16",
            "input 'b' has dynamic shape \\?x8 but the shape profile gives it no range",
        ),
        (
            "a:1x16/4x16/8x16,b:1x8/4x8/8x8,c:1/1/1",
            "names input 'c', which .* does not have; inputs are a:\\?x16, b:\\?x8",
        ),
        ("a:1x17/4x17/8x17,b:1x8/4x8/8x8", "input 'a' axis 1 is fixed at 16 in the model"),
        ("a:1/4/8,b:1x8/4x8/8x8", "input 'a' has 2 dimensions"),
    ],
)
def test_profile_mismatches_name_the_input(tmp_path, rtx, save, models, spec, needle):
    path = save(models["two_input_matmul"]())
    with pytest.raises(UsageError, match=needle):
        Builder(BuildConfig(profiles=profiles_from_specs([spec])), cache_dir=False).build(path)


def test_unparseable_model_reports_node_names(tmp_path, rtx, save, models):
    path = save(models["unparseable"](), "bad.onnx")
    with pytest.raises(
        BuildError,
        match=r"bad\.onnx: TensorRT-RTX .* cannot parse the model: node 'weird_node' \(FooBar\)",
    ):
        Builder(cache_dir=False).build(path, tmp_path / "bad.engine")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_not_onnx_and_missing_model(tmp_path, rtx):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 definitely not protobuf" * 10)
    with pytest.raises(ModelLoadError, match="junk.onnx"):
        Builder(cache_dir=False).build(junk)
    with pytest.raises(ModelLoadError, match="no such file"):
        Builder(cache_dir=False).build(tmp_path / "absent.onnx")


def test_unknown_backend(rtx, models):
    with pytest.raises(UsageError, match="unknown backend 'cuda'"):
        Builder(BuildConfig(backend="cuda")).build(models["conv_relu"](1))


def test_hardware_compatibility_is_refused_on_rtx(rtx, models):
    with pytest.raises(UsageError, match="not a TensorRT-RTX option"):
        Builder(BuildConfig(hardware_compatibility="ampere-plus"), cache_dir=False).build(
            models["conv_relu"](1)
        )


def test_version_compatible_sets_the_flag(rtx, models):
    """VERSION_COMPATIBLE reaches the builder: the RTX wheel lacks the lean runtime it embeds, and says so."""
    model = models["conv_relu"](1)
    plain = Builder(cache_dir=False).build(model)
    try:
        vc = Builder(BuildConfig(version_compatible=True), cache_dir=False).build(model)
    except BuildError as exc:
        assert "failed to build the engine" in str(exc) and "lean" in str(exc)
    else:
        assert vc.sidecar["config"]["version_compatible"] is True and vc.engine != plain.engine


def test_unwritable_output(tmp_path, rtx, save, models, build_calls):
    path = save(models["conv_relu"](1))
    with pytest.raises(OutputError, match="does not exist"):
        Builder(cache_dir=False).build(path, tmp_path / "missing" / "m.engine")
    with pytest.raises(OutputError, match="is a directory"):
        Builder(cache_dir=False).build(path, tmp_path)
    with pytest.raises(OutputError, match="same file as input"):
        Builder(cache_dir=False).build(path, path)
    assert build_calls == []  # refused before the slow part
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        with pytest.raises(OutputError, match="not writable"):
            Builder(cache_dir=False).build(path, ro / "m.engine")


def test_failed_sidecar_write_leaves_nothing(tmp_path, rtx, save, models, monkeypatch):
    path = save(models["conv_relu"](1))

    def boom(target, text):
        raise OutputError(f"cannot write {target}: disk full")

    monkeypatch.setattr(engine_module, "write_text_atomic", boom)
    with pytest.raises(OutputError, match="disk full"):
        Builder(cache_dir=False).build(path, tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists() and _leftovers(tmp_path) == []


def test_progress_reports_build_phases(rtx, models):
    seen = []
    Builder(
        cache_dir=False, progress=lambda phase, step, total: seen.append((phase, step, total))
    ).build(models["conv_relu"](1))
    assert seen and all(0 <= step <= max(total, 0) or total == 0 for _, step, total in seen)


def test_composable_functions(rtx, models):
    parsed = network_from_onnx(models["two_input_matmul"](), "tensorrt-rtx")
    assert [t.name for t in parsed.inputs] == ["a", "b"] and parsed.inputs[0].is_dynamic
    data = engine_bytes_from_network(
        parsed, BuildConfig(profiles=profiles_from_specs(["a:2x16,b:2x8"]))
    )
    assert isinstance(data, bytes) and len(data) > 1000


class _RecordingConfig:
    """A real IBuilderConfig that records what the timing-cache helper hands TensorRT."""

    def __init__(self, config, *, unreadable=False, accept=None):
        self.config, self.created, self.set_calls = config, [], []
        self._unreadable, self._accept = unreadable, accept

    def create_timing_cache(self, data):
        self.created.append(bytes(data))
        return None if self._unreadable else self.config.create_timing_cache(data)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.set_calls.append((cache, ignore_mismatch))
        if self._accept is not None:
            return self._accept
        return self.config.set_timing_cache(cache, ignore_mismatch)


def test_timing_cache_helper_reads_and_sets(tmp_path, rtx):
    """A missing file is an empty cache; an existing one is read whole; mismatches are not ignored."""
    builder = rtx.Builder(rtx.Logger(rtx.Logger.ERROR))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        config = builder.create_builder_config()
        assert config.get_timing_cache() is None
        missing = tmp_path / "none.cache"
        recorder = _RecordingConfig(config)
        cache = _load_timing_cache(recorder, str(missing))
        assert recorder.created == [b""] and recorder.set_calls == [(cache, False)]
        assert config.get_timing_cache() is not None
        assert not missing.exists()  # only written after a build
        saved = tmp_path / "saved.cache"
        saved.write_bytes(bytes(cache.serialize()))
        again = _RecordingConfig(builder.create_builder_config())
        loaded = _load_timing_cache(again, str(saved))
        assert again.created == [saved.read_bytes()] and again.set_calls == [(loaded, False)]
        assert bytes(again.config.get_timing_cache().serialize()) == saved.read_bytes()


def test_timing_cache_refusals_are_build_errors(tmp_path, rtx):
    config = rtx.Builder(rtx.Logger(rtx.Logger.ERROR)).create_builder_config()
    path = tmp_path / "t.cache"
    path.write_bytes(b"x" * 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(BuildError, match="not readable by this TensorRT"):
            _load_timing_cache(_RecordingConfig(config, unreadable=True), str(path))
        with pytest.raises(BuildError, match="does not match this TensorRT/GPU"):
            _load_timing_cache(_RecordingConfig(config, accept=False), str(path))


# ---------------------------------------------------------------- load / inspect


@pytest.fixture
def built(tmp_path, rtx, save, models):
    path = save(models["conv_relu"](1))
    out = tmp_path / "m.engine"
    Builder(cache_dir=False).build(path, out)
    return out


def test_load_engine_checks_sidecar_before_deserializing(built, monkeypatch):
    side = json.loads(built.with_suffix(".engine.json").read_text())
    called = []
    monkeypatch.setattr(engine_module, "engine_from_bytes", lambda *a, **k: called.append(1))

    side["backend"]["version"] = "0.9.0"
    built.with_suffix(".engine.json").write_text(json.dumps(side))
    with pytest.raises(
        EngineFileError, match=r"built with tensorrt-rtx 0\.9\.0 but .* is installed"
    ):
        load_engine(built)
    side["backend"]["name"] = "tensorrt"
    built.with_suffix(".engine.json").write_text(json.dumps(side))
    with pytest.raises(
        EngineFileError, match="built with 'tensorrt' but the backend here is 'tensorrt-rtx'"
    ):
        load_engine(built, "tensorrt-rtx")
    assert called == []


def test_load_engine_detects_replaced_engine(built):
    built.write_bytes(built.read_bytes()[:-1] + b"\x00")
    with pytest.raises(EngineFileError, match="does not match its sidecar's sha256"):
        load_engine(built)


def test_load_engine_without_or_with_broken_sidecar(built):
    side = built.with_suffix(".engine.json")
    side.write_text("{not json")
    with pytest.raises(EngineFileError, match="not valid JSON"):
        load_engine(built)
    side.write_text(json.dumps({"hello": 1}))
    with pytest.raises(EngineFileError, match="not an onnx2trt engine sidecar"):
        load_engine(built)
    side.unlink()
    with pytest.raises(EngineFileError, match="no sidecar beside the engine"):
        load_engine(built)


@pytest.mark.parametrize(
    "content",
    [b"x" * 4096, b"TRT" + bytes(range(256)) * 8, b"\x00" * 100],
    ids=["text", "bytes", "zeros"],
)
def test_corrupt_or_foreign_engine_is_refused(tmp_path, rtx, content):
    path = tmp_path / "foreign.engine"
    path.write_bytes(content)
    with pytest.raises(EngineFileError, match="refuses the engine: not a valid engine"):
        load_engine(path, "tensorrt-rtx", check_sidecar_first=False)


def test_empty_and_missing_engine(tmp_path, rtx):
    (tmp_path / "e.engine").write_bytes(b"")
    with pytest.raises(EngineFileError, match="empty file"):
        load_engine(tmp_path / "e.engine")
    with pytest.raises(EngineFileError, match="no such engine file"):
        load_engine(tmp_path / "nope.engine")


def test_valid_engine_cannot_run_here_but_says_why(built):
    """This CPU machine has no GPU: RTX must refuse with its own reason, not crash."""
    with pytest.raises(EngineFileError, match=r"m\.engine: .*(CUDA|cuda|GPU)"):
        load_engine(built)


def test_inspect_engine(built, rtx):
    report = inspect_engine(built)
    assert report["sidecar"]["backend"]["version"] == rtx.__version__
    assert report["problems"] == []
    assert report["size"] == built.stat().st_size
    assert report["engine"]["loaded"] is False and "GPU" in report["engine"]["reason"]
    built.with_suffix(".engine.json").unlink()
    bare = inspect_engine(built)
    assert bare["sidecar"] is None and "no sidecar" in bare["sidecar_error"]


def test_shared_dim_names_need_equal_ranges(rtx, tmp_path):
    """Axes with one ONNX dim name are one dimension to TensorRT: unequal ranges are refused up front."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu0")],
        "square",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "S", "S"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "S", "S"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(
        UsageError, match=r"input 'x' axis 1 and input 'x' axis 2 share the ONNX dimension name 'S'"
    ):
        Builder(
            BuildConfig(profiles=profiles_from_specs(["x:1x4x8/1x4x8/1x4x8"])), cache_dir=False
        ).build(model)
    res = Builder(
        BuildConfig(profiles=profiles_from_specs(["x:1x4x4/1x8x8/1x16x16"])), cache_dir=False
    ).build(model)
    assert res.sidecar["inputs"][0]["shape"] == [1, -1, -1]


@pytest.mark.slow
def test_real_wheel_model_builds_and_hits_cache(tmp_path, rtx, build_calls):
    """PaddleOCR's text-direction classifier as shipped in the rapidocr-onnxruntime wheel."""
    rapidocr = pytest.importorskip("rapidocr_onnxruntime")
    from pathlib import Path

    model = Path(rapidocr.__file__).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    if not model.is_file():
        pytest.skip(f"{model.name} is not in this rapidocr-onnxruntime wheel")
    config = BuildConfig(profiles=profiles_from_specs(["x:1x3x48x48/8x3x48x48/16x3x48x48"]))
    first = Builder(config).build(model, tmp_path / "cls.engine")
    assert first.sidecar["inputs"][0]["shape"] == [-1, 3, -1, -1] and len(first.engine) > 100_000
    assert (
        Builder(config).build(model, tmp_path / "cls2.engine").cache_hit and len(build_calls) == 1
    )


def test_timing_cache_is_ignored_on_rtx_with_a_warning(tmp_path, rtx, models, caplog):
    target = tmp_path / "t.cache"
    with caplog.at_level("WARNING", logger="onnx2trt_lib.build.engine"):
        Builder(BuildConfig(timing_cache=str(target)), cache_dir=False).build(
            models["conv_relu"](1)
        )
    assert "ignores timing caches" in caplog.text and not target.exists()


def test_timing_cache_helper_with_an_existing_file(tmp_path, rtx):
    """A stale file is handed to TensorRT as it is; TensorRT falls back to an empty cache."""
    builder = rtx.Builder(rtx.Logger(rtx.Logger.INTERNAL_ERROR))
    stale = tmp_path / "stale.cache"
    stale.write_bytes(b"not a timing cache" * 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        empty = bytes(builder.create_builder_config().create_timing_cache(b"").serialize())
        recorder = _RecordingConfig(builder.create_builder_config())
        cache = _load_timing_cache(recorder, str(stale))
        assert recorder.created == [b"not a timing cache" * 4]
        assert recorder.config.get_timing_cache() is not None
        assert bytes(cache.serialize()) == empty
    assert stale.read_bytes() == b"not a timing cache" * 4  # the input is not rewritten on load


def test_failing_progress_callback_does_not_abort_the_build(rtx, models):
    def broken(phase, step, total):
        raise RuntimeError("display bug")

    assert Builder(cache_dir=False, progress=broken).build(models["conv_relu"](1)).engine


def test_truncated_engine_is_shorter_than_a_header(tmp_path, rtx):
    path = tmp_path / "short.engine"
    path.write_bytes(b"ftrt")
    with pytest.raises(EngineFileError, match="shorter than a TensorRT-RTX .* engine header"):
        load_engine(path, "tensorrt-rtx", check_sidecar_first=False)


def test_inspect_engine_without_any_tensorrt(built, monkeypatch):
    from onnx2trt_lib import _optional

    monkeypatch.setattr(_optional, "available", lambda module: False)
    report = inspect_engine(built)
    assert report["sidecar"]["target"] == "portable"
    assert (
        report["engine"]["loaded"] is False and "tensorrt_rtx module" in report["engine"]["reason"]
    )


def test_external_data_model_is_fingerprinted_with_its_weights(tmp_path, rtx, models, build_calls):
    folder = tmp_path / "ext"
    folder.mkdir()
    model = models["conv_relu"](1)
    onnx.save(
        model,
        str(folder / "m.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="m.data",
        size_threshold=0,
    )
    config = BuildConfig()
    Builder(config).build(folder / "m.onnx")
    assert Builder(config).build(folder / "m.onnx").cache_hit
    data = bytearray((folder / "m.data").read_bytes())
    data[0] ^= 0x40  # change one weight, not the .onnx file
    (folder / "m.data").write_bytes(bytes(data))
    assert not Builder(config).build(folder / "m.onnx").cache_hit
    assert len(build_calls) == 2


def test_calibration_inputs_are_keyed_by_content(tmp_path, rtx, models, build_calls):
    import numpy as np

    from onnx2trt_lib.calib.cache import CalibrationCache, write_cache

    model = models["conv_relu"](1)
    cache = tmp_path / "c.cache"
    write_cache(cache, CalibrationCache.from_amax({"x": 3.0}, version="10.3.0"))
    config = BuildConfig(int8=True, calibration_cache=str(cache))
    Builder(config).build(model)
    assert Builder(config).build(model).cache_hit
    write_cache(cache, CalibrationCache.from_amax({"x": 4.0}, version="10.3.0"))
    assert not Builder(config).build(model).cache_hit
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "x.npy", np.ones((2, 3, 8, 8), np.float32))
    from onnx2trt_lib.build.cache import _content_digest

    before = _content_digest(str(data))
    np.save(data / "y.npy", np.ones((2, 3, 8, 8), np.float32))
    assert _content_digest(str(data)) != before
    with pytest.raises(UsageError, match="does not exist"):
        _content_digest(str(tmp_path / "gone"))


def test_unwritable_engine_cache_only_warns(tmp_path, rtx, models, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level("WARNING", logger="onnx2trt_lib.build.cache"):
        res = Builder(cache_dir=blocker / "engines").build(
            models["conv_relu"](1), tmp_path / "m.engine"
        )
    assert (
        res.engine
        and (tmp_path / "m.engine").exists()
        and "could not store engine in cache" in caplog.text
    )


def test_default_cache_dir_follows_environment(monkeypatch, tmp_path):
    from onnx2trt_lib.build.cache import default_cache_dir

    monkeypatch.setenv("ONNX2TRT_CACHE_DIR", str(tmp_path / "a"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("ONNX2TRT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "onnx2trt" / "engines"


def test_inspection_helpers_for_the_cli(built, tmp_path):
    from onnx2trt_lib.build import engine_path_for, inspection_lines, is_engine_artifact

    side = built.with_suffix(".engine.json")
    assert is_engine_artifact(built) and is_engine_artifact(side)
    assert engine_path_for(side) == built and engine_path_for(built) == built
    other = tmp_path / "notes.json"
    other.write_text('{"a": 1}')
    assert not is_engine_artifact(other) and not is_engine_artifact(tmp_path / "absent")
    lines = inspection_lines(inspect_engine(built))
    assert lines[0].startswith(f"{built}: TensorRT engine") and any(
        "input  x  float32  1x3x8x8" in ln for ln in lines
    )
    assert any(ln.startswith("  engine not loaded here:") for ln in lines)
    side.unlink()
    assert is_engine_artifact(built)  # by its leading bytes
    assert any("no sidecar" in ln for ln in inspection_lines(inspect_engine(built)))


def test_build_engine_function_and_profile_lines(tmp_path, rtx, save, models):
    from onnx2trt_lib.build import build_engine, inspection_lines

    out = tmp_path / "d.engine"
    res = build_engine(
        save(models["conv_relu"]("N")), out, BuildConfig(profiles=DYN), cache_dir=True
    )
    assert res.path == out and not res.cache_hit
    assert "  profile 0: x:1x3x8x8/2x3x8x8/4x3x8x8" in inspection_lines(inspect_engine(out))


def test_ctrl_c_in_a_progress_callback_cancels_the_build(tmp_path):
    """KeyboardInterrupt inside TensorRT's progress callback cancels the build and surfaces as
    KeyboardInterrupt (the CLI maps it to exit 130), not as a 'build failed' error."""
    pytest.importorskip("tensorrt_rtx")
    from helpers import conv_relu_model

    from onnx2trt_lib.build import BuildConfig, network_from_onnx
    from onnx2trt_lib.build.engine import engine_bytes_from_network

    calls = []

    def progress(phase, step, total):
        calls.append(phase)
        raise KeyboardInterrupt

    parsed = network_from_onnx(conv_relu_model(), "tensorrt-rtx")
    with pytest.raises(KeyboardInterrupt):
        engine_bytes_from_network(parsed, BuildConfig(backend="tensorrt-rtx"), progress=progress)
    assert calls
