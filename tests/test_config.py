"""Configuration: flags, TOML and Python values become one validated SweepConfig; bad input is one line."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.sweep.cases import expand
from harness.sweep.config import ConfigError, SweepConfig


def test_comma_strings_and_lists_mean_the_same() -> None:
    a = SweepConfig.build(device="cpu", shapes="32x64x64,8x5x7", batch_sizes="1,8", dtypes="float32,float16")
    b = SweepConfig.build(device="cpu", shapes=[[32, 64, 64], "8x5x7"], batch_sizes=[1, 8],
                          dtypes=["float32", "float16"])
    assert a == b
    assert a.shapes == ((32, 64, 64), (8, 5, 7))


def test_cases_cover_the_product_with_variants_adjacent() -> None:
    cfg = SweepConfig.build(device="cpu", variants="eager", shapes="32x8x8,16x4x4", batch_sizes="1,2",
                            modes="forward,train", reductions="2,4", fusions="add,max")
    cases = expand(cfg)
    assert len(cases) == 2 * 2 * 2 * 2 * 2
    assert len({c.key for c in cases}) == len(cases)


def test_toml_file_is_read_and_flags_override_it(tmp_path: Path) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text('[sweep]\nshapes = ["16x8x8"]\nbatch-sizes = [2, 4]\nmodes = "forward"\nreductions = [2, 4]\n')
    cfg = SweepConfig.build(path, device="cpu", batch_sizes="3")
    assert cfg.shapes == ((16, 8, 8),)
    assert cfg.batch_sizes == (3,)
    assert cfg.modes == ("forward",)
    assert cfg.reductions == (2, 4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"variants": "eagr"}, "unknown variant 'eagr'; did you mean eager"),
        ({"variants": "nope"}, "unknown variant 'nope'; known: amp_bf16,"),  # at cutoff 0.5 it said compile
        ({"variants": "cuda"}, "unknown variant 'cuda'; did you mean cuda_fused, cuda_graph"),
        ({"variants": "nothing*"}, "no variant matches 'nothing*'"),
        ({"shapes": "32x64"}, "malformed shape '32x64'"),
        ({"shapes": "axbxc"}, "malformed shape 'axbxc'"),
        ({"shapes": "32x0x64"}, "zero or negative size"),
        ({"shapes": "8x4x4", "reductions": "16"}, "reduction 16 leaves no hidden channel for C=8"),
        ({"batch_sizes": "-1"}, "batch size must be ≥ 1"),
        ({"dtypes": "float8"}, "unknown dtype 'float8'"),
        ({"modes": "inference"}, "unknown mode 'inference'"),
        ({"fusions": "sum"}, "unknown fusion 'sum'"),
        ({"device": "tpu"}, "device"),
        ({"max_time_s": "soon"}, "--max-time must be a number"),
        ({"max_time_s": float("inf")}, "--max-time must be a finite number"),
        ({"min_samples": 50, "max_samples": 5}, "--min-samples 50 exceeds --max-samples 5"),
        ({"rel_ci": 1.0}, "--rel-ci must be below 1"),
        ({"cache": "hot,cold"}, "--cache takes one value"),
        ({"out": " "}, "--out is empty"),
        ({"colour": "red"}, "unknown option 'colour'"),
    ],
)
def test_bad_input_is_one_clear_line(options: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        SweepConfig.build(**{"device": "cpu", **options})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_cuda_without_cuda_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        SweepConfig.build(device="cuda")


@pytest.mark.parametrize("device", ["cpu", "cpu:0", "CPU"])
def test_every_spelling_of_the_cpu_is_the_cpu(device: str) -> None:
    """Rows, the CPU-only defaults (steady malloc, no interpreter-timed Triton) and the reports all
    read the device as ``cpu``: ``cpu:0`` must not slip past them."""
    assert SweepConfig.build(device=device, variants="eager").device == "cpu"


def test_auto_device_falls_back_to_cpu_with_cpu_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    cfg = SweepConfig.build()
    assert cfg.device == "cpu"
    # the CPU sweep, not the GPU one: CPU-sized shapes, one batch, float32 only
    assert cfg.shapes == ((32, 64, 64), (64, 32, 32)) and cfg.batch_sizes == (8,) and cfg.dtypes == ("float32",)
    assert set(cfg.variants) == {"eager", "control", "eager_factored", "mean_squeeze", "channels_last", "amp_bf16",
                                 "compile"}
    assert cfg.modes == ("forward", "train") and cfg.explicit_variants == frozenset()


@pytest.mark.parametrize(
    ("content", "message"),
    [("shapes = [", "bad.toml' is not valid TOML"), ("[sweep]\nshapes = 3\n", "malformed shape 3"),
     ("sweep = 3\n", "[sweep] must be a table"),
     ("[sweeps]\nshapes = ['8x4x4']\n", "[sweeps] is not read; options go either at the top level or under [sweep]"),
     ("[sweep]\nmodes = 'forward'\n[other]\nshapes = 3\n", "[other] is not read"),
     ("max-time = 0.05\n[sweep]\nvariants = 'eager'\n", "'max-time' is outside [sweep] and would be ignored"),
     ("shard = {index = 1}\n", "'shard' is given a table; it takes a value, as --shard does"),
     ("[max-time]\ns = 3\n", "'max-time' is given a table; it takes a value, as --max-time does"),
     # a number made a folder "5" in the current directory, true one named "True"
     ("out = 5\n", "--out must be a folder name, got 5"), ("out = true\n", "--out must be a folder name, got True"),
     ("context = []\n", "no context named in []; leave the option out")],  # a templated list left empty
)
def test_invalid_config_files_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(message)):
        SweepConfig.build(path, device="cpu")


def test_a_timing_policy_refusal_names_the_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever ``TimingPolicy`` itself refuses comes back as a ConfigError in the user's words."""
    from harness.sweep import config

    def strict(**fields: object) -> None:
        raise ValueError("need 1 ≤ min_samples ≤ max_samples and warmup_s ≥ 0")

    monkeypatch.setattr(config, "TimingPolicy", strict)
    with pytest.raises(ConfigError, match="timing options: need 1 ≤ --min-samples ≤ --max-samples and --warmup ≥ 0"):
        SweepConfig.build(device="cpu")


def test_missing_config_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        SweepConfig.build(tmp_path / "nope.toml")


def test_globs_expand_and_exact_names_are_explicit(temp_variant) -> None:
    temp_variant("eager_twin", lambda ref, device, dtype: ref.to(device, dtype))
    cfg = SweepConfig.build(device="cpu", variants="eager*")
    assert set(cfg.variants) >= {"eager", "eager_twin"}
    assert cfg.explicit_variants == frozenset()
    assert SweepConfig.build(device="cpu", variants="eager_twin").explicit_variants == {"eager_twin"}


def test_default_variants_are_not_explicit() -> None:
    """Only names the user typed may time an interpreter-only variant on CPU."""
    assert SweepConfig.build(device="cpu").explicit_variants == frozenset()


def test_a_config_file_takes_the_flags_spellings_too(tmp_path: Path) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text('device = "cpu"\nvariants = "eager"\nbias = [true]\nmax-time = 0.5\nwarmup = 0\n'
                    'batch-sizes = [2]\nmin_samples = 4\n')
    cfg = SweepConfig.build(path)
    assert cfg.biases == (True,) and cfg.batch_sizes == (2,)
    assert (cfg.timing.max_time_s, cfg.timing.warmup_s, cfg.timing.min_samples) == (0.5, 0.0, 4)
    path.write_text("batch-size = 2\n")
    with pytest.raises(ConfigError, match=r"unknown key 'batch-size'; did you mean batch-sizes\? known: device, vari"):
        SweepConfig.build(path)


@pytest.mark.parametrize("key", ["quiet", "profile", "save-baseline", "save_baseline", "resume"])
def test_a_config_key_that_is_a_command_line_flag_says_where_it_belongs(tmp_path: Path, key: str) -> None:
    """The README said a config file takes "the same options"; quiet read as "unknown key 'quiet'"."""
    path = tmp_path / "sweep.toml"
    path.write_text(f"{key} = true\n")
    flag = key.replace("_", "-")
    with pytest.raises(ConfigError, match=f"key '{key}' is not a sweep setting: give --{flag} on the command line"):
        SweepConfig.build(path)


def test_every_option_is_a_flag_a_keyword_and_a_field() -> None:
    """One table (harness.sweep.options.OPTIONS) for the CLI, config files, harness.run and resume."""
    import dataclasses

    from harness.cli import build_parser
    from harness.measure.timing import TimingPolicy
    from harness.sweep.options import OPTIONS

    run = build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    flags = {s for action in run._actions for s in action.option_strings}
    config_fields = {f.name for f in dataclasses.fields(SweepConfig)}
    timing_fields = {f.name for f in dataclasses.fields(TimingPolicy)}
    for option in OPTIONS:
        assert option.flag in flags
        assert option.name in (timing_fields if option.timing else config_fields), option.name


def test_a_cold_cache_asked_for_on_the_cpu_from_python_is_a_warning() -> None:
    """``cache`` flushes a GPU's L2; on the CPU calls run back to back whatever was asked, and the
    rows say ``hot``: asking for ``cold`` there is told so, the default and ``hot`` are not (the
    command line's one warning line: ``tests/test_cli_firstrun.py``)."""
    import warnings

    from conftest import FAST_RUN

    import harness

    tiny = {"device": "cpu", "variants": "eager", "shapes": "4x4x4", "batch_sizes": "1", "modes": "forward",
            "write": False, **FAST_RUN}  # fmt: skip
    with pytest.warns(RuntimeWarning, match=r"^--cache cold flushes a GPU's L2 only: on cpu calls are timed back"):
        harness.run(cache="cold", **tiny)
    for quiet in ({}, {"cache": "hot"}):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert harness.run(**quiet, **tiny)["cache"].tolist() == ["hot"]


def test_the_python_api_names_a_bad_option_as_the_caller_spelt_it(capsys: pytest.CaptureFixture) -> None:
    """``harness.run(max_time=-1)`` said ``--max-time must be ≥ 0.001``: a flag the caller never typed.
    The command line keeps its flags."""
    import harness
    from harness.cli import main

    for given, message in (({"variants": "nope"}, "variants: unknown variant 'nope'"),
                           ({"max_time": -1}, "max_time must be ≥ 0.001, got -1"),
                           ({"max_time_s": -1}, "max_time_s must be ≥ 0.001, got -1"),
                           ({"batch_sizes": "x"}, "batch_sizes: batch size must be an integer, got 'x'"),
                           ({"resume": "/nonexistent"}, "resume '/nonexistent': no such run folder")):  # fmt: skip
        with pytest.raises(ConfigError) as caught:
            harness.run(device="cpu", write=False, **given)
        assert str(caught.value).startswith(message), caught.value
    assert main(["run", "--device", "cpu", "--max-time", "-1"]) == 2
    assert "error: --max-time must be ≥ 0.001, got '-1'" in capsys.readouterr().err


def test_the_python_api_advises_on_a_taken_folder_in_keywords(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A folder holding a run told a Python caller to "give --overwrite"; the command line keeps its flags."""
    import harness
    from harness.cli import main
    from harness.results.store import OutputError

    tiny = {"device": "cpu", "variants": "eager", "shapes": "8x8x8", "batch_sizes": 1, "modes": "forward",
            "dtypes": "float32", "max_time": 0.02, "min_samples": 3, "out": str(tmp_path)}
    harness.run(**tiny)
    with pytest.raises(OutputError) as caught:
        harness.run(**tiny)
    assert str(caught.value).endswith(f"choose another out, or give overwrite=True to replace it, or resume "
                                      f"{str(tmp_path)!r} to finish it"), caught.value
    assert main(["run", "--device", "cpu", "--out", str(tmp_path)]) == 2
    assert f"or give --overwrite to replace it, or --resume {str(tmp_path)!r} to finish it" in capsys.readouterr().err
