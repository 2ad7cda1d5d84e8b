"""A new user's first hour on a CPU machine without Slurm: every stumble is one plain line that says
what to do, never a traceback, a raw Python warning or silence."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from compare_helpers import CPU_ENV, case, noise, row, write_run
from conftest import FAST_RUN
from rich.console import Console

import harness
from harness.cli import main
from harness.list_cache import Entry, Listing
from harness.results import baselines
from harness.sweep.config import ConfigError, SweepConfig

ROOT = Path(__file__).resolve().parent.parent
TINY = {"device": "cpu", "variants": "eager", "shapes": "4x4x4", "batch_sizes": "1", "modes": "forward", **FAST_RUN}
FLAGS = ["--device", "cpu", "--variants", "eager", "--shapes", "4x4x4", "--modes", "forward", "--warmup", "0",
         "--min-samples", "3", "--max-samples", "20", "--max-time", "0.05", "--rel-ci", "0.05", "--quiet"]  # fmt: skip


def one_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# --- 1. --launcher slurm where there is no Slurm ----------------------------------------------------


def test_launcher_slurm_without_slurm_is_one_line_naming_the_local_launcher(tmp_path: Path, monkeypatch,
                                                                            capsys) -> None:  # fmt: skip
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun on it, whatever this machine has
    args = ["run", "--launcher", "slurm", "--shards", "1", *FLAGS, "--out", str(tmp_path / "run")]
    assert main(args) == 2
    err = one_line(capsys)
    assert "no Slurm here (srun not found)" in err and "--launcher local" in err


def test_any_failure_setting_up_submitit_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    submitit = pytest.importorskip("submitit")

    class Refusing:
        def __init__(self, **kwargs: object) -> None:
            pass

        def update_parameters(self, **kwargs: object) -> None:
            raise ValueError("Unavailable parameter(s): ['gpus_per_node']\nValid parameters are:\n  - name")

    monkeypatch.setattr(submitit, "AutoExecutor", Refusing)
    assert main(["run", "--launcher", "local", "--shards", "1", *FLAGS, "--out", str(tmp_path / "run")]) == 2
    err = one_line(capsys)
    assert "--launcher local: cannot set up submitit: ValueError: Unavailable parameter(s)" in err


# --- 2. the Python API takes the flags' spellings, as config files do ------------------------------


def test_the_python_api_takes_the_flags_spellings() -> None:
    cfg = SweepConfig.build(device="cpu", max_time=0.5, warmup=0, bias="true", batch_sizes=2)
    assert (cfg.timing.max_time_s, cfg.timing.warmup_s, cfg.biases) == (0.5, 0.0, (True,))
    frame = harness.run(write=False, **{k: v for k, v in TINY.items() if k not in ("warmup_s", "max_time_s")},
                        warmup=0, max_time=0.05)  # fmt: skip
    assert len(frame) == 1 and frame["status"].tolist() == ["ok"]


def test_an_unknown_keyword_suggests_the_nearest_and_lists_them_all() -> None:
    with pytest.raises(ConfigError) as info:
        harness.run(write=False, device="cpu", max_tme=1)
    message = str(info.value)
    assert "unknown option 'max_tme'; did you mean max_time?" in message
    assert "max_time/max_time_s" in message and "bias/biases" in message and "\n" not in message
    with pytest.raises(ConfigError, match="'max_time' and 'max_time_s' are the same option"):
        SweepConfig.build(device="cpu", max_time=1, max_time_s=2)


def test_an_out_folder_with_write_false_is_refused_not_left_empty(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"out='.*' names a folder, but write=False keeps nothing on disk"):
        harness.run(write=False, device="cpu", out=str(tmp_path / "kept"))
    assert not (tmp_path / "kept").exists()


def test_the_known_keys_are_exactly_the_accepted_ones(tmp_path: Path) -> None:
    """The keyword with dashes (``max-time-s``) is accepted besides the flag: unknown keys list it."""
    from harness.sweep.options import SPELLINGS, known_spellings, option_name

    path = tmp_path / "sweep.toml"
    path.write_text("max-time-ss = 1\n")
    with pytest.raises(ConfigError) as info:
        SweepConfig.build(path)
    assert "did you mean max-time-s?" in str(info.value)
    known = {k for group in str(info.value).split("known: ")[1].split(", ") for k in group.split("/")}
    assert {k.replace("_", "-") for k in SPELLINGS} == known
    assert all(option_name(k) is not None for k in known)
    committed = tomllib.loads((ROOT / "results" / "baselines" / "sweep-cpu.toml").read_text())
    assert set(committed.get("sweep", committed)) <= known
    assert known_spellings("_").count("/") == known_spellings("-").count("/")


# --- 3. list matches contexts too -----------------------------------------------------------------

LISTING = Listing("cpu", (Entry("eager", "the reference", "cpu,cuda", None),),
                  (Entry("unet", "a Unet", "cpu,cuda", None), Entry("unet_graphed", "graphed", "cuda", "no GPU")))


def test_list_pattern_matches_contexts_too() -> None:
    from harness.cli import show_listing

    console = Console(record=True, width=200)
    show_listing(LISTING, "unet*", console)
    text = console.export_text()
    assert "unet " in text and "unet_graphed" in text and "eager" not in text
    console = Console(record=True, width=200)
    show_listing(LISTING, "eager", console)
    assert "unet" not in console.export_text()
    with pytest.raises(ConfigError, match="no variant or context matches 'zzz'"):
        show_listing(LISTING, "zzz", Console(record=True))


def test_a_context_whose_library_fails_to_import_is_listed_unavailable() -> None:
    """``list`` asks a context as ``run`` does: installed but broken (torchvision built for another
    torch) is unavailable, with the reason, never "installed" and then refused by ``run``."""
    from harness.cli import current_listing
    from variants.contexts import Context, add_context, remove_context

    broken = Context("zz_broken_net", "test", lambda: None, lambda m: False, lambda m: m,
                     available=lambda: "needs netlib: RuntimeError: operator netlib::nms does not exist")
    add_context(broken)
    try:
        entry = next(c for c in current_listing("cpu").contexts if c.name == "zz_broken_net")
    finally:
        remove_context("zz_broken_net")
    assert entry.state == "needs netlib: RuntimeError: operator netlib::nms does not exist"


def test_a_reason_in_brackets_is_listed_as_written() -> None:
    """Reasons and descriptions are text, not rich markup: ``[unet]`` in a pip command stays."""
    from harness.cli import show_listing
    from harness.list_cache import Entry, Listing

    reason = "needs smp (pip install 'scse-harness[unet]')"
    listing = Listing("cpu", (Entry("v[1]", "a [bold] word", "cpu", reason),),
                      (Entry("net", "a [red] net", "cpu", reason),))
    console = Console(record=True, width=300)
    show_listing(listing, "*", console)
    text = console.export_text()
    assert text.count("pip install 'scse-harness[unet]'") == 2 and "a [bold] word" in text and "a [red] net" in text


# --- 4. a results.jsonl given for its run folder --------------------------------------------------


@pytest.fixture
def tiny_run(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    harness.run(**TINY, out=str(out))
    return out


def test_report_merge_and_resume_take_a_runs_results_jsonl(tiny_run: Path, tmp_path: Path, capsys) -> None:
    assert main(["report", str(tiny_run / "results.jsonl")]) == 0
    assert main(["merge", str(tiny_run / "results.jsonl"), "--out", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "results.jsonl").is_file()
    assert len(harness.run(resume=tiny_run / "results.jsonl")) == 1
    capsys.readouterr()
    assert main(["report", str(tiny_run / "results.csv")]) == 2
    assert "give the run folder, not a file in it" in one_line(capsys)


def test_report_rebuilds_a_run_whose_env_json_is_damaged(tiny_run: Path, capsys) -> None:
    """compare reads such a run ("environment not checked"); report refused it outright."""
    (tiny_run / "env.json").write_text("{")
    capsys.readouterr()
    assert main(["report", str(tiny_run)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "env.json: cannot be read" in err and "rebuilt without the run's environment" in err
    assert "eager" in (tiny_run / "report.md").read_text()


# --- 5. a mistyped flag points to the sub-command's help ------------------------------------------


def test_an_unknown_flag_points_to_the_subcommands_help(capsys) -> None:
    assert main(["run", "--variantss", "eager"]) == 2
    assert one_line(capsys) == "error: unrecognized arguments: --variantss eager (see python -m harness run --help)"
    assert main(["report", "x", "--plotz"]) == 2
    assert "(see python -m harness report --help)" in one_line(capsys)


# --- 6 and 7. resuming a finished run, and one cut off mid-row ------------------------------------


def test_resuming_a_finished_run_says_there_is_nothing_left(tiny_run: Path, capsys) -> None:
    """It rewrites the reports and nothing else: env.json still describes the machine and the day the
    cases were measured (a resume measured the copy bandwidth and took the date again), and no empty
    progress bar is drawn."""
    env_before = json.loads((tiny_run / "env.json").read_text())
    (tiny_run / "report.md").unlink()
    capsys.readouterr()
    assert main(["run", "--resume", str(tiny_run)]) == 0
    out = capsys.readouterr().out
    assert f"nothing left to run: all 1 cases of {tiny_run} are finished" in out
    assert "0/0" not in out, out
    assert json.loads((tiny_run / "env.json").read_text()) == env_before
    assert (tiny_run / "report.md").read_text().startswith("# ")
    assert "Run not finished" not in (tiny_run / "report.md").read_text()


def test_a_row_from_before_bias_and_contexts_is_a_finished_case(tiny_run: Path, capsys) -> None:
    """Schema-1 rows have no ``bias``, ``context`` or ``schema``: read as a case, they are the block
    alone without bias, so resuming must not run them again (and write the case twice)."""
    results = tiny_run / "results.jsonl"
    old = [{k: v for k, v in json.loads(line).items() if k not in ("bias", "context", "schema")}
           for line in results.read_text().splitlines()]  # fmt: skip
    results.write_text("".join(json.dumps(r) + "\n" for r in old))
    capsys.readouterr()
    assert main(["run", "--resume", str(tiny_run), "--quiet"]) == 0
    assert "nothing left to run" in capsys.readouterr().out
    assert len(results.read_text().splitlines()) == 1


def test_a_cut_off_row_is_one_plain_warning_line(tiny_run: Path, capsys) -> None:
    results = tiny_run / "results.jsonl"
    whole = results.read_bytes()
    results.write_bytes(whole + b'{"variant": "eager", "dev')
    capsys.readouterr()
    assert main(["run", "--resume", str(tiny_run), "--quiet"]) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"warning: {results}: its last line was cut off mid-row"), err
    assert len(err.splitlines()) == 1 and "RuntimeWarning" not in err and "store.py" not in err
    assert results.read_bytes() == whole


# --- 8. --save-baseline never silently shrinks a baseline -----------------------------------------


def test_saving_a_baseline_of_fewer_cases_is_refused_unless_forced(tmp_path: Path) -> None:
    root = tmp_path / "baselines"
    big = write_run(tmp_path / "big", [row(case(batch=b), noise(1.0)) for b in (1, 2)],
                    env=CPU_ENV | {"threads": 4})  # fmt: skip
    small = write_run(tmp_path / "small", [row(case(), noise(1.0))], env=CPU_ENV | {"threads": 1})
    assert baselines.replacement(big, root) is None
    saved = baselines.save_baseline(big, root)
    replaced = baselines.replacement(small, root)
    assert replaced is not None and replaced.path == saved
    assert str(replaced) == "2 timed cases → 1; threads 4 → 1"
    with pytest.raises(baselines.BaselineError, match="holds 2 timed cases, this run only 1; kept it; give --repl"):
        baselines.save_baseline(small, root)
    assert len((saved / "results.jsonl").read_text().splitlines()) == 2
    baselines.save_baseline(small, root, force=True)
    assert len((saved / "results.jsonl").read_text().splitlines()) == 1


def test_a_run_whose_cases_failed_replaces_no_baseline(tmp_path: Path) -> None:
    """Counting rows, a run of four errors once replaced a baseline of four timed cases."""
    root = tmp_path / "baselines"
    good = write_run(tmp_path / "good", [row(case(batch=b), noise(1.0)) for b in (1, 2, 4)])
    saved = baselines.save_baseline(good, root)
    half = write_run(tmp_path / "half", [row(case(batch=1), noise(1.0)), row(case(batch=2), noise(1.0)),
                                         row(case(batch=4), status="error", reason="RuntimeError: boom")])  # fmt: skip
    assert str(baselines.replacement(half, root)) == "3 timed cases → 2"
    with pytest.raises(baselines.BaselineError, match="holds 3 timed cases, this run only 2"):
        baselines.save_baseline(half, root)
    broken = write_run(tmp_path / "broken", [row(case(batch=b), status="error", reason="boom") for b in (1, 2, 4)])
    for force in (False, True):
        with pytest.raises(baselines.BaselineError, match="broken: no case was timed"):
            baselines.save_baseline(broken, root, force=force)
    assert (saved / "results.jsonl").read_text() == (good / "results.jsonl").read_text()


def test_a_broken_baseline_is_replaced_and_said_to_be_unreadable(tmp_path: Path) -> None:
    """A baseline whose env.json cannot be read holds nothing worth keeping: a new run replaces it,
    even a smaller one, and says what it replaced."""
    root = tmp_path / "baselines"
    saved = baselines.save_baseline(write_run(tmp_path / "big", [row(case(batch=b), noise(1.0)) for b in (1, 2)]), root)
    (saved / "env.json").write_text("{")
    small = write_run(tmp_path / "small", [row(case(), noise(1.0))])
    replaced = baselines.replacement(small, root)
    assert replaced is not None and replaced.before is None
    assert str(replaced).startswith("an unreadable baseline → 1; ") and "cannot read" in str(replaced)
    baselines.save_baseline(small, root)
    assert len((saved / "results.jsonl").read_text().splitlines()) == 1


def test_run_save_baseline_says_what_it_replaces_and_refuses_fewer_cases(tmp_path: Path, monkeypatch,
                                                                         capsys) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    # from outside the repository the relative default started a new tree here, unseen by compare and CI
    assert main(["run", *FLAGS, "--batch-sizes", "1,2", "--out", "big", "--save-baseline"]) == 2
    assert one_line(capsys) == (f"error: --save-baseline: there is no results/baselines folder in {tmp_path}: run "
                                "from the repository's root, or give --baselines-dir DIR")
    assert not (tmp_path / "big").exists() and not (tmp_path / "results").exists()  # refused before the sweep
    assert main(["run", *FLAGS, "--batch-sizes", "1", "--out", "elsewhere", "--baselines-dir", "mine"]) == 2
    assert one_line(capsys) == "error: --baselines-dir only goes with --save-baseline"
    assert main(["run", *FLAGS, "--batch-sizes", "1", "--out", "elsewhere", "--save-baseline",
                 "--baselines-dir", "mine"]) == 0  # fmt: skip
    assert len(list((tmp_path / "mine").iterdir())) == 1  # the device's baseline, in the folder given
    assert "baseline: mine/" in capsys.readouterr().out
    (tmp_path / "results" / "baselines").mkdir(parents=True)  # as in the repository's root
    assert main(["run", *FLAGS, "--batch-sizes", "1,2", "--out", "big", "--save-baseline"]) == 0
    saved = next((tmp_path / "results" / "baselines").iterdir())
    capsys.readouterr()
    assert main(["run", *FLAGS, "--batch-sizes", "1", "--out", "small", "--save-baseline"]) == 2
    err = one_line(capsys)  # refused before the sweep ran: it would have run for nothing
    assert "cannot save the baseline" in err and "holds 2 timed cases, this sweep only 1" in err
    assert "--replace-baseline" in err and not (tmp_path / "small").exists()
    assert len((saved / "results.jsonl").read_text().splitlines()) == 2
    monkeypatch.setattr("harness.cli.check_baseline_room", lambda config, options, root: None)  # the check at the end
    assert main(["run", *FLAGS, "--batch-sizes", "1", "--out", "small", "--save-baseline"]) == 2
    err = one_line(capsys)
    assert "cannot save the baseline" in err and "holds 2 timed cases, this run only 1" in err
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert main(["run", *FLAGS, "--batch-sizes", "1", "--out", "again", "--replace-baseline"]) == 2
    assert one_line(capsys) == "error: --replace-baseline only goes with --save-baseline"
    assert not (tmp_path / "again").exists()  # refused before anything ran
    assert main(["run", *FLAGS, "--batch-sizes", "1", "--out", "small", "--overwrite", "--save-baseline"]) == 2
    capsys.readouterr()  # --overwrite replaces the run folder, never the baseline
    assert main(["run", *FLAGS, "--batch-sizes", "1", "--out", "small", "--overwrite", "--save-baseline",
                 "--replace-baseline"]) == 0
    replaced = f"baseline: {Path('results/baselines') / saved.name} (replaced: 2 timed cases → 1)"
    assert replaced in capsys.readouterr().out
    assert json.loads((saved / "env.json").read_text())["config"]["out"] == "small"


def test_why_smp_is_unavailable_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not installed: the pip command with the constraint that keeps this torch. Installed beside a
    torchvision built for another torch: that, not "needs smp" (a new user had just installed it)."""
    import importlib
    import importlib.util

    import torch

    import variants.unet as unet

    def failing(error: Exception):  # noqa: ANN202
        def import_module(name: str, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            raise error

        return import_module

    keep = f"torch=={torch.__version__.split('+')[0]}"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    monkeypatch.setattr(importlib, "import_module", failing(ModuleNotFoundError("No module named 'x'")))
    assert unet.smp_unavailable() == (f"needs segmentation-models-pytorch: pip install -c <(echo {keep}) "
                                      "'scse-harness[unet]' (ModuleNotFoundError: No module named 'x')")  # fmt: skip
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(importlib, "import_module", failing(RuntimeError("operator torchvision::nms does not exist")))
    monkeypatch.setattr(unet, "_version", lambda package: "0.28.0")
    assert unet.smp_unavailable() == (
        f"segmentation-models-pytorch is installed, but torchvision 0.28.0 does not load beside torch "
        f"{torch.__version__}: install the torchvision built for this torch (RuntimeError: operator "
        "torchvision::nms does not exist)")  # fmt: skip
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchvision" else object())
    monkeypatch.setattr(importlib, "import_module", failing(ModuleNotFoundError("No module named 'torchvision'")))
    assert unet.smp_unavailable() == (
        "segmentation-models-pytorch is installed but torchvision is not: install the torchvision built for "
        f"torch {torch.__version__} (ModuleNotFoundError: No module named 'torchvision')")  # fmt: skip
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(importlib, "import_module", failing(ImportError("cannot import name 'y'")))
    assert unet.smp_unavailable() == ("segmentation-models-pytorch is installed but does not import: "
                                      "ImportError: cannot import name 'y'")  # fmt: skip


def test_a_cold_cache_asked_for_on_the_cpu_is_one_warning_line(tmp_path: Path, capsys) -> None:
    """``--cache`` flushes a GPU's L2; on the CPU calls run back to back whatever was asked, and the rows
    say ``hot``. Asking for ``cold`` there, by flag or in a config file, is told so; the default,
    ``hot`` and a resumed run are not."""
    (tmp_path / "cold.toml").write_text('cache = "cold"\n')
    for extra in (["--cache", "cold"], ["--config", str(tmp_path / "cold.toml")]):
        capsys.readouterr()
        assert main(["run", *FLAGS, *extra, "--batch-sizes", "1", "--out", str(tmp_path / extra[0][2:])]) == 0
        err = capsys.readouterr().err.strip()
        assert err == ("warning: --cache cold flushes a GPU's L2 only: on cpu calls are timed back to back, with "
                       "whatever they left in the caches (the rows say cache=hot)"), err
    for extra in ([], ["--cache", "hot"]):
        out = tmp_path / f"quiet{len(extra)}"
        assert main(["run", *FLAGS, *extra, "--batch-sizes", "1", "--out", str(out)]) == 0
        assert "warning" not in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path / "cache"), "--quiet"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert pd.read_csv(out / "results.csv")["cache"].tolist() == ["hot"]
