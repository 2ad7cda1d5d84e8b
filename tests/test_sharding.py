"""``--shard K/N``: a deterministic partition of the sweep, balanced by estimated cost, that
keeps each configuration's variants together; N shards merged give exactly the unsharded sweep."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from conftest import FAST_RUN

import harness
from harness.results.merge import merge
from harness.results.store import read_jsonl
from harness.sweep import sharding
from harness.sweep.cases import KEY_COLUMNS, Case, expand
from harness.sweep.config import ConfigError, Shard, SweepConfig
from variants.registry import all_variants


def case(batch: int = 1, c: int = 8, hw: int = 8, variant: str = "eager", mode: str = "forward") -> Case:
    return Case(variant, "cpu", "float32", mode, batch, c, hw, hw, 2, "add")


@pytest.mark.parametrize(("value", "expected"), [("2/4", Shard(2, 4)), (" 1 / 1 ", Shard(1, 1)),
                                                 ({"index": 3, "count": 5}, Shard(3, 5)), ([1, 2], Shard(1, 2))])
def test_shard_parses_every_stored_form(value: object, expected: Shard) -> None:
    assert Shard.parse(value) == expected
    assert Shard.parse(str(expected)) == expected


@pytest.mark.parametrize("value", ["0/4", "5/4", "1/0", "2", "a/b", "-1/2"])
def test_bad_shards_are_config_errors(value: str) -> None:
    with pytest.raises(ConfigError, match="shard"):
        SweepConfig.build(device="cpu", shard=value)


def test_shards_partition_the_sweep_and_keep_configurations_together() -> None:
    cfg = SweepConfig.build(device="cpu", variants="eager,mean_squeeze,compile", shapes="8x8x8,16x8x8,8x16x16",
                            batch_sizes=[1, 4, 16], modes="forward,train")  # fmt: skip
    cases = expand(cfg)
    for count in (1, 2, 3, 5, 7):
        shards = sharding.assign(cases, count, all_variants())
        assert sharding.assign(cases, count, all_variants()) == shards  # deterministic
        flat = [c for s in shards for c in s]
        assert sorted(flat) == sorted(cases) and len(set(flat)) == len(cases)  # disjoint and complete
        for part in shards:
            assert part == [c for c in cases if c in part]  # each shard runs in sweep order
        owner = {c: k for k, part in enumerate(shards) for c in part}
        for _, group in itertools.groupby(sorted(cases, key=sharding.group_key), key=sharding.group_key):
            assert len({owner[c] for c in group}) == 1  # a configuration's variants ran side by side


def test_more_shards_than_configurations_cost_no_memory() -> None:
    """``--shard 1/99999999999999999999`` built a list per shard until the kernel killed the process
    (21 GB). Past the configurations, a shard is empty; below, each holds one configuration, as LPT
    gives them."""
    cases = [case(batch=b, variant=v) for b in (1, 2, 4) for v in ("eager", "mean_squeeze")]
    few = sharding.assign(cases, 3)
    huge = 10**20
    assert [sharding.select(cases, Shard(k, huge)) for k in (1, 2, 3)] == few
    assert sharding.select(cases, Shard(4, huge)) == [] and sharding.select(cases, Shard(huge, huge)) == []
    assert len(sharding.assign(cases, huge)) == 3


def test_balance_is_by_cost_not_by_count() -> None:
    big = [case(batch=64, c=256, hw=128, variant=v) for v in ("eager", "mean_squeeze")]
    small = [case(batch=1, c=8, hw=8 + i, variant=v) for i in range(6) for v in ("eager", "mean_squeeze")]
    cases = big + small
    registry = all_variants()
    first, second = sharding.assign(cases, 2, registry)
    with_big = first if big[0] in first else second
    assert set(big) <= set(with_big)
    assert len(with_big) < len(cases) / 2  # fewer cases, because they cost more

    costs = {c: sharding.estimate_cost(c, registry[c.variant]) for c in cases}
    loads = [sum(costs[c] for c in part) for part in (first, second)]
    lower_bound = max(sum(costs.values()) / 2, costs[big[0]] + costs[big[1]])
    assert max(loads) <= 4 / 3 * lower_bound  # the LPT guarantee


def test_cost_grows_with_size_mode_and_compilation() -> None:
    registry = all_variants()
    eager = registry["eager"]
    assert sharding.estimate_cost(case(batch=32, c=64, hw=64), eager) > sharding.estimate_cost(case(), eager)
    assert sharding.estimate_cost(case(batch=32, mode="train"), eager) > sharding.estimate_cost(case(batch=32), eager)
    assert sharding.first_call_s(registry["compile"]) >= 10 * max(sharding.first_call_s(eager), 1)
    assert sharding.first_call_s(registry["compile_max_autotune"]) > sharding.first_call_s(registry["compile"])


def test_a_declared_first_call_cost_is_used(temp_variant) -> None:
    temp_variant("zz_jit", lambda r, d, t: r, tags={"first_call_s": 42.0})
    assert sharding.first_call_s(all_variants()["zz_jit"]) == 42.0


def test_n_shards_merged_give_exactly_the_unsharded_sweep(tmp_path: Path) -> None:
    options = {"device": "cpu", "variants": "eager,mean_squeeze", "shapes": "4x4x4,8x4x4", "batch_sizes": [1, 2],
               "modes": "forward", **FAST_RUN}  # fmt: skip
    runs = []
    for k in (1, 2, 3):
        frame = harness.run(**options, shard=f"{k}/3", out=str(tmp_path / f"shard{k}"))
        runs.append(tmp_path / f"shard{k}")
        assert len(frame) == len(sharding.select(expand(SweepConfig.build(**options)), Shard(k, 3), all_variants()))
    result = merge(runs, tmp_path / "merged")
    rows = read_jsonl(tmp_path / "merged" / "results.jsonl")
    got = [tuple(r[c] for c in KEY_COLUMNS) for r in rows]
    assert len(got) == len(set(got)) == result.rows == 8
    assert set(got) == {c.key for c in expand(SweepConfig.build(**options))}
    assert (tmp_path / "merged" / "report.md").exists()


def test_a_shards_cases_do_not_depend_on_the_timing_flags() -> None:
    """A shard resumed with another --max-time must hold the same cases, or some would go to no shard
    and others run twice (seen with eager,compile over seven shapes, three batches and both modes)."""
    options = dict(device="cpu", variants="eager,compile", batch_sizes=[1, 8, 32], modes="forward,train",
                   shapes="32x64x64,8x8x8,16x16x16,64x32x32,64x128x128,256x64x64,128x8x8")
    default = expand(SweepConfig.build(**options))
    for timing in ({"max_time_s": 0.5}, {"warmup_s": 2.0, "max_time_s": 30}):
        cases = expand(SweepConfig.build(**options, **timing))
        for k in (1, 2):
            got = sharding.select(cases, Shard(k, 2), all_variants())
            want = sharding.select(default, Shard(k, 2), all_variants())
            assert [c.key for c in got] == [c.key for c in want]


def test_an_empty_shard_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A shard past the configurations ran nothing, wrote only env.json and said nothing."""
    from harness.cli import main

    flags = ["--device", "cpu", "--variants", "eager", "--shapes", "4x4x4", "--batch-sizes", "1,2", "--modes",
             "forward", "--warmup", "0", "--max-time", "0.05", "--quiet"]  # fmt: skip
    assert main(["run", *flags, "--shard", "3/3", "--out", str(tmp_path / "s3")]) == 0
    assert "shard 3/3 holds no case: the sweep's 2 configuration(s) went to the shards before it" in (
        capsys.readouterr().out)
