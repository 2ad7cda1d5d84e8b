"""The registry: decorator registration, glob listing, and plugins from another installed package."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import variants
from variants.registry import get_variant, list_variants, register, reload_entry_points, unregister

ROOT = Path(__file__).resolve().parent.parent


def test_eager_is_registered_and_builds_the_seed_module() -> None:
    v = get_variant("eager")
    ref = variants.ScSE(8)
    fn = v.build(ref, torch.device("cpu"), torch.float64)
    x = torch.randn(1, 8, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(fn(x), ref.double()(x))
    assert fn is not ref  # a copy: the reference stays float32 for the next variant


def test_list_variants_filters_by_glob(temp_variant) -> None:
    temp_variant("zz_one", lambda r, d, t: r)
    temp_variant("zz_two", lambda r, d, t: r)
    assert list_variants("zz_*") == ["zz_one", "zz_two"]
    assert list_variants("zz_*", exclude="*two") == ["zz_one"]
    assert list_variants(["zz_one", "eager"]) == ["eager", "zz_one"]


def test_unknown_name_suggests_the_nearest() -> None:
    with pytest.raises(KeyError, match="did you mean eager"):
        get_variant("eagre")


def test_unsupported_combinations_give_reasons(temp_variant) -> None:
    temp_variant("zz_cuda", lambda r, d, t: r, devices=("cuda",), dtypes=("float16",), modes=("forward",),
                 fusions=("add",))
    v = get_variant("zz_cuda")
    assert v.unavailable("cpu") == "needs CUDA"
    assert "not float32" in v.unsupported("cuda", "float32", "forward", "add")
    assert "not train" in v.unsupported("cuda", "float16", "train", "add")
    assert "not max" in v.unsupported("cuda", "float16", "forward", "max")
    assert v.unsupported("cuda", "float16", "forward", "add") is None


def test_a_failing_availability_check_is_a_reason_not_a_crash(temp_variant) -> None:
    def boom() -> str | None:
        raise RuntimeError("driver exploded")

    temp_variant("zz_boom", lambda r, d, t: r, available=boom)
    assert "driver exploded" in get_variant("zz_boom").unavailable("cpu")


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        variants.register("eager", "again")(lambda r, d, t: r)


def make_plugin(root: Path) -> None:
    """An installed-looking package (a dist-info with an entry point) outside this repo."""
    pkg = root / "scse_plugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        import copy
        from variants import register

        @register("plugin_eager", "a variant from another package")
        def build(reference, device, dtype):
            return copy.deepcopy(reference).to(device, dtype)
    '''))
    info = root / "scse_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: scse-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[harness.variants]\nplugin = scse_plugin\n")


def test_entry_point_plugins_are_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_plugin(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        reload_entry_points()
        assert "plugin_eager" in list_variants("plugin_*")
    finally:
        unregister("plugin_eager")
        sys.modules.pop("scse_plugin", None)


def test_a_plugin_slow_to_import_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin that slept 8 s on import slowed every run, and every worker, with nothing to say why."""
    from variants import registry

    make_plugin(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "SLOW_PLUGIN_S", 0.0)  # any import takes longer than that
    try:
        with pytest.warns(RuntimeWarning, match=r"variant plugin 'plugin' \(scse_plugin\) took \d+\.\d s to import"):
            problems = reload_entry_points()
        assert [p for p in problems if "took" in p] and "plugin_eager" in list_variants("plugin_*")
        monkeypatch.setattr(registry, "SLOW_PLUGIN_S", 60.0)
        sys.modules.pop("scse_plugin", None)
        unregister("plugin_eager")
        assert not [p for p in reload_entry_points() if "took" in p]
    finally:
        unregister("plugin_eager")
        sys.modules.pop("scse_plugin", None)


def make_package(root: Path, package: str, body: str) -> None:
    """A package ``package`` installed-looking under ``root``, its one entry point named after it."""
    (root / package).mkdir()
    (root / package / "__init__.py").write_text(textwrap.dedent(body))
    info = root / f"{package}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[harness.variants]\n{package} = {package}\n")


def test_a_name_two_plugins_register_runs_under_neither_and_their_other_variants_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which plugin won used to hang on the order entry points load in, and the loser's other
    variants were lost with it; a plugin may replace a built-in only by saying so, and it is said aloud."""
    from variants.registry import registered, unknown_variant_message, variant_source

    template = """
        import copy
        from variants import register

        def build(reference, device, dtype):
            return copy.deepcopy(reference).to(device, dtype)

        {registrations}
    """
    plugins = {
        "plug_a": 'register("shared_name", "a")(build)\nregister("only_a", "a")(build)',
        "plug_b": 'register("shared_name", "b")(build)\nregister("only_b", "b")(build)',
        "plug_c": 'register("eager", "not the built-in")(build)\nregister("only_c", "c")(build)',
    }
    for package, registrations in plugins.items():
        make_package(tmp_path, package, template.format(registrations=registrations.replace("\n", "\n        ")))
    monkeypatch.syspath_prepend(str(tmp_path))
    eager = get_variant("eager")  # the built-ins loaded: the first test of a fresh xdist worker found none
    names = ["shared_name", "only_a", "only_b", "only_c"]
    try:
        with pytest.warns(RuntimeWarning) as caught:
            problems = reload_entry_points()
        assert problems == []  # each conflict a warning; no plugin failed to load
        messages = [str(w.message) for w in caught]
        assert any("'shared_name' is registered by two plugins, plugin 'plug_a' (plug_a) and plugin 'plug_b' "
                   "(plug_b): neither is run" in m for m in messages), messages
        assert any("plugin 'plug_c' (plug_c) registers variant 'eager', a built-in name, without replace=True: "
                   "kept the built-in" in m for m in messages), messages
        found = list_variants("*")
        assert "shared_name" not in found and {"only_a", "only_b", "only_c"} <= set(found)
        assert registered("eager") is eager and variant_source("eager") == "built-in"
        assert variant_source("only_a") == "plugin 'plug_a' (plug_a)"
        assert unknown_variant_message("shared_name") == ("variant 'shared_name' is registered by 2 plugins, "
                                                          "plugin 'plug_a' (plug_a), plugin 'plug_b' (plug_b): "
                                                          "uninstall all but one, or rename")
    finally:
        for name in names:
            unregister(name)
        for package in plugins:
            sys.modules.pop(package, None)


def test_an_entry_point_that_registers_nothing_is_said_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module without @register, a dict, or a function returning a number: each was silent (or a
    bare "'int' object is not iterable"), and the author's variants simply missing."""
    (tmp_path / "plug_empty").mkdir()
    (tmp_path / "plug_empty" / "__init__.py").write_text("SETTINGS = {'a': 1}\n\ndef make():\n    return 3\n")
    info = tmp_path / "plug_empty-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plug_empty\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[harness.variants]\nmodule = plug_empty\nsettings = plug_empty:SETTINGS\n"
                                           "number = plug_empty:make\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.warns(RuntimeWarning):
            problems = reload_entry_points()
    finally:
        sys.modules.pop("plug_empty", None)
    assert sorted(problems) == sorted([
        "variant plugin 'module' (plug_empty) registered no variant: its entry point must name a module that "
        "registers some, a Variant, or a function returning some",
        "variant plugin 'settings' (plug_empty:SETTINGS) registered no variant: its entry point must name a module "
        "that registers some, a Variant, or a function returning some",
        "variant plugin 'number' (plug_empty:make) failed to load: TypeError: plug_empty:make returned int, not a "
        "Variant or a list of them",
    ])


def test_a_plugin_that_replaces_a_built_in_is_said_aloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from variants.registry import add_variant, get_variant, registered, variant_source

    make_package(tmp_path, "plug_eager", """
        import copy
        from variants import register

        @register("eager", "a faster eager", replace=True)
        def build(reference, device, dtype):
            return copy.deepcopy(reference).to(device, dtype)
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    eager = get_variant("eager")  # the built-ins loaded: the first test of a fresh xdist worker had none
    try:
        with pytest.warns(RuntimeWarning, match="plugin 'plug_eager' \\(plug_eager\\) replaces the built-in variant "
                                                "'eager': runs of 'eager' time the plugin's code \\(plug_eager\\)"):
            reload_entry_points()
        assert registered("eager").description == "a faster eager"
        assert variant_source("eager") == "plugin 'plug_eager' (plug_eager)"
    finally:
        add_variant(eager, replace=True)
        sys.modules.pop("plug_eager", None)
    assert variant_source("eager") == "built-in"


def test_a_plugins_registry_warning_is_one_plain_line_in_a_run(tmp_path: Path) -> None:
    """`list` said "warning: ..." while `run` showed the same warning as Python does, the plugin's
    file, line and source line: it points at the plugin's @register, outside the harness."""
    make_package(tmp_path, "plug_shadow", """
        import copy
        from variants import register

        @register("eager", "a second eager")
        def build(reference, device, dtype):
            return copy.deepcopy(reference).to(device, dtype)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    out = subprocess.run([sys.executable, "-m", "harness", "run", "--variants", "eager", "--shapes", "4x4x4",
                          "--batch-sizes", "1", "--modes", "forward", "--dtypes", "float32", "--max-time", "0.05",
                          "--warmup", "0", "--quiet", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    said = [line for line in out.stderr.splitlines() if "plug_shadow" in line]
    assert said == ["warning: plugin 'plug_shadow' (plug_shadow) registers variant 'eager', a built-in name, without "
                    "replace=True: kept the built-in one, ignored the plugin's"], out.stderr


def test_plugin_variants_run_from_the_cli(tmp_path: Path) -> None:
    make_plugin(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    out = subprocess.run([sys.executable, "-m", "harness", "list"], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "plugin_eager" in out.stdout and "a variant from another package" in out.stdout
    run = subprocess.run(
        [sys.executable, "-m", "harness", "run", "--device", "cpu", "--variants", "plugin_eager,eager", "--shapes",
         "8x4x4", "--batch-sizes", "1", "--modes", "forward", "--max-time", "0.05", "--warmup", "0",
         "--out", str(tmp_path / "run"), "--quiet"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "plugin_eager" in (tmp_path / "run" / "results.csv").read_text()
    sources = json.loads((tmp_path / "run" / "env.json").read_text())["variant_sources"]
    assert sources == {"plugin_eager": "plugin 'plugin' (scse_plugin)", "eager": "built-in"}


def test_tags_are_typed_and_a_mistyped_tag_fails_at_registration() -> None:
    from variants.tags import Tags, tags_of

    with pytest.raises(ValueError, match="compiles"):
        register("bad_tag_variant", "a tag of the wrong type", tags={"compiles": "yes"})(lambda r, d, t: r)
    with pytest.raises(ValueError, match="compute_dtype"):
        Tags.parse({"compute_dtype": "float8"})
    tags = Tags.parse({"compiles": True, "biases": [True], "my_tool_hint": 3})
    assert tags.compiles and tags.biases == (True,) and dict(tags.other) == {"my_tool_hint": 3}
    assert tags_of(get_variant("channels_last")).memory_format == torch.channels_last
    assert tags_of(get_variant("eager")) == Tags()


def test_tag_values_that_would_break_a_sweep_fail_at_registration() -> None:
    """A dict tag was registered, then every sweep meeting the variant ended in "unhashable type";
    ``biases=("False",)`` read as bias=True only. A list is taken as the tuple it means."""
    from variants.registry import Variant
    from variants.tags import tags_of

    with pytest.raises(ValueError, match="'vendor_info' must be a plain value"):
        register("zz_dict_tag", "x", tags={"vendor_info": {"lab": "x"}})(lambda r, d, t: r)
    with pytest.raises(ValueError, match="'biases' must be a tuple of True and/or False"):
        register("zz_text_bias", "x", tags={"biases": ("False",)})(lambda r, d, t: r)
    with pytest.raises(ValueError, match="zz_listed"):  # a Variant made by hand, as a plugin may give one
        variants.registry.add_variant(Variant("zz_listed", "x", lambda r, d, t: r, tags=(("biases", [False]),)))
    try:
        register("zz_list_bias", "x", tags={"biases": [False]})(lambda r, d, t: r)
        assert tags_of(get_variant("zz_list_bias")).biases == (False,)
    finally:
        unregister("zz_list_bias")
    assert not {"zz_dict_tag", "zz_text_bias", "zz_listed"} & set(list_variants("zz_*"))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tags": {"compute_dtpye": "bfloat16"}}, "unknown tag 'compute_dtpye'; did you mean 'compute_dtype'?"),
    ({"tags": {"isolated": True}}, "unknown tag 'isolated'; did you mean 'isolate'?"),
    ({"dtypes": ("fp32",)}, "unknown dtype 'fp32'"),
    ({"modes": ("forwards",)}, "unknown mode 'forwards'; did you mean 'forward'?"),
    ({"devices": ("cpu", "gpu")}, "unknown device 'gpu'"),
    ({"fusions": ("sum",)}, "unknown fusion 'sum'"),
    ({"dtypes": ()}, "dtypes is empty"),
    ({"tags": {"compute_dtype": "fp16"}}, "variant 'zz_declared': tag 'compute_dtype' must be one of"),
])  # fmt: skip
def test_a_declaration_every_case_would_skip_or_misread_fails_at_registration(kwargs: dict, message: str) -> None:
    """A misspelt tag went to another tool's tags (an AMP variant then failed every float32 case);
    ``("fp32",)`` or ``("forwards",)`` was accepted and every case skipped; a bad tag value's
    message named neither the variant nor the value."""
    with pytest.raises(ValueError, match=re.escape(message)):
        register("zz_declared", "x", **kwargs)(lambda r, d, t: r)
    assert "zz_declared" not in list_variants("zz_*")


def test_a_comma_separated_declaration_is_split_and_a_build_without_three_arguments_is_refused() -> None:
    try:
        register("zz_commas", "x", dtypes="float32, float16", fusions="add,max")(lambda r, d, t: r)
        assert get_variant("zz_commas").dtypes == frozenset({"float32", "float16"})  # it was one unknown dtype
        assert get_variant("zz_commas").fusions == frozenset({"add", "max"})
    finally:
        unregister("zz_commas")
    with pytest.raises(ValueError, match=r"variant 'zz_two_args': build must take \(reference, device, dtype\)"):
        register("zz_two_args", "x")(lambda reference, device: reference)  # failed 200 cases alike before
    register("zz_star", "x")(lambda *args: args[0])  # any signature that takes three is fine
    unregister("zz_star")


def test_a_plugin_that_exits_on_import_is_a_warning_and_the_rest_still_run(tmp_path: Path) -> None:
    """``raise SystemExit`` in a plugin's module ended `list` and every run, built-in ones too,
    without naming the plugin."""
    make_plugin(tmp_path)
    (tmp_path / "scse_exits.py").write_text('raise SystemExit("CUDA toolkit not found, exiting")\n')
    info = tmp_path / "scse_exits-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: scse-exits\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[harness.variants]\nexits = scse_exits\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    out = subprocess.run([sys.executable, "-m", "harness", "list", "--refresh"], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "plugin_eager" in out.stdout and "eager_factored" in out.stdout
    warning = [line for line in out.stderr.splitlines() if "exits" in line]
    assert warning == ["warning: variant plugin 'exits' (scse_exits) failed to load: SystemExit: CUDA toolkit "
                       "not found, exiting"], out.stderr  # one line, naming the plugin


def test_an_availability_check_that_raises_is_a_reason_not_a_crash() -> None:
    from variants.contexts import Context
    from variants.registry import Variant

    def boom() -> str | None:
        raise OSError("libcuda.so: cannot open shared object file")

    variant = Variant("zz_boom", "test", lambda r, d, t: r, available=boom)
    assert variant.unavailable("cpu") == "availability check failed: libcuda.so: cannot open shared object file"
    context = Context("zz_boom", "test", lambda: None, lambda m: False, lambda m: m, available=boom)
    assert context.unavailable() == "availability check failed: libcuda.so: cannot open shared object file"


def test_a_context_name_is_checked_and_never_taken_twice() -> None:
    from variants.contexts import Context, add_context, all_contexts

    def make(name: str) -> Context:
        return Context(name, "test", lambda: None, lambda m: False, lambda m: m)

    with pytest.raises(ValueError, match="context name 'a b' must be letters"):
        add_context(make("a b"))
    unet = all_contexts()["unet"]
    with pytest.raises(ValueError, match="context 'unet' is already registered"):
        add_context(make("unet"))
    assert all_contexts()["unet"] is unet
