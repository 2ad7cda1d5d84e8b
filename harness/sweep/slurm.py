"""``run --launcher slurm --shards N``: the sweep as a Slurm job array through submitit, then merged.

Task K of the array runs ``--shard K/N`` into ``OUT/shards/shard-K-of-N``; when all tasks have ended
the shard folders are merged into ``OUT`` itself. A task that is preempted or reaches its time
limit is requeued by submitit (``ShardJob.checkpoint``) and, because a shard folder that already
exists is resumed rather than restarted, goes on after its last finished case. ``--launcher
local`` uses submitit's local executor instead (every shard a process on this machine, all at
once): for trying the launcher, and for the tests.

submitit is an optional extra: ``pip install 'scse-harness[slurm]'``.
"""
from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from harness.results.merge import MergeResult, merge
from harness.results.store import ENV_JSON, default_run_dir
from harness.sweep.cases import expand
from harness.sweep.config import ConfigError, SweepConfig
from harness.sweep.sharding import group_key

LAUNCHERS: dict[str, str] = {"slurm": "slurm", "local": "local"}  # our name → submitit's cluster name
SHARDS_DIR = "shards"
LOGS_DIR = "slurm"


@dataclass(frozen=True)
class SlurmOptions:
    """How to submit: N array tasks, each with these resources."""

    shards: int
    launcher: str = "slurm"
    partition: str | None = None
    time_min: int = 240
    gpus_per_task: int | None = None  # None: 1 unless the sweep runs on the CPU
    cpus_per_task: int | None = None

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise ConfigError(f"unknown launcher {self.launcher!r}; choose from {', '.join(LAUNCHERS)}")
        if self.shards < 1:
            raise ConfigError(f"--shards must be ≥ 1, got {self.shards}")
        if self.time_min < 1:
            raise ConfigError(f"--slurm-time must be ≥ 1 minute, got {self.time_min}")
        for flag, count, least in (("--slurm-gpus", self.gpus_per_task, 0), ("--slurm-cpus", self.cpus_per_task, 1)):
            if count is not None and count < least:  # else handed to Slurm, which refuses the job after submission
                raise ConfigError(f"{flag} must be ≥ {least}, got {count}")


def shard_dir(root: Path, index: int, count: int) -> Path:
    return root / SHARDS_DIR / f"shard-{index}-of-{count}"


@dataclass(frozen=True)
class ShardJob:
    """What one array task runs; pickled by submitit, so it holds only plain data."""

    options: dict[str, Any]
    config_file: str | None
    root: str
    count: int

    def __call__(self, index: int) -> str:
        from harness import api

        out = shard_dir(Path(self.root), index, self.count)
        options = self.options | {"shard": f"{index}/{self.count}"}
        if (out / ENV_JSON).exists():  # requeued or rerun: go on after the last finished case
            frame = api.sweep(None, resume=out, **{k: v for k, v in options.items() if k != "out"})
        else:
            frame = api.sweep(self.config_file, **(options | {"out": str(out)}))
        return str(frame.attrs["run_dir"])

    def checkpoint(self, index: int) -> Any:
        """Called by submitit on preemption or timeout: requeue the same shard (it resumes)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, index)


def import_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher needs submitit: pip install 'scse-harness[slurm]'") from None
    except Exception as exc:  # noqa: BLE001 - installed but broken: say so in one line
        raise ConfigError(f"--launcher needs submitit, which fails to import: {type(exc).__name__}: {exc}") from None
    return submitit


def make_executor(submitit: Any, folder: Path, slurm: SlurmOptions, gpus: int) -> Any:
    """submitit's executor, ready to submit. Whatever fails while it is set up (no Slurm here, a
    parameter this submitit lacks) is one line, before anything is queued or run."""
    if slurm.launcher == "slurm" and shutil.which("srun") is None:  # submitit's own test, said plainly
        raise ConfigError("--launcher slurm: no Slurm here (srun not found); "
                          "use --launcher local to run the shards on this machine")  # fmt: skip
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=LAUNCHERS[slurm.launcher])
        executor.update_parameters(
            name="harness", timeout_min=slurm.time_min, tasks_per_node=1, nodes=1, gpus_per_node=gpus,
            cpus_per_task=slurm.cpus_per_task, slurm_partition=slurm.partition,
            slurm_array_parallelism=slurm.shards,
        )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - submitit raises RuntimeError, ValueError, OSError...: one line
        first = (str(exc).strip().splitlines() or [""])[0]
        why = f"{type(exc).__name__}: {first}"
        raise ConfigError(f"--launcher {slurm.launcher}: cannot set up submitit: {why}") from None
    return executor


def launch(options: Mapping[str, Any], slurm: SlurmOptions, config_file: str | None = None,
           console: Console | None = None) -> tuple[MergeResult | None, list[str]]:
    """Submit the shards, wait for them and merge those that ran into the run folder (None when
    none did); also returns a line per failed task.

    The options are checked here first (a bad shape fails before anything is queued), with the
    device left for the compute node to resolve: a login node often has no GPU.
    """
    submitit = import_submitit()
    given = {k: v for k, v in options.items() if v is not None}
    if "shard" in given:
        raise ConfigError("--launcher makes the shards itself; drop --shard")
    checked = SweepConfig.build(config_file, **(given | {"device": "cpu"}))
    configurations = len({group_key(case) for case in expand(checked)})
    if slurm.shards > configurations:  # the shards past them would be empty tasks, or idle processes
        raise ConfigError(f"--shards {slurm.shards} is more than the sweep's {configurations} configuration(s), "
                          "the smallest unit a shard holds; ask for at most that many")  # fmt: skip
    device = str(given.get("device", "auto"))
    root = Path(given.pop("out", None) or default_run_dir("slurm" if slurm.launcher == "slurm" else "local"))
    if (root / "results.jsonl").exists():
        raise ConfigError(f"--out {root} already holds results; launch into a new folder")
    gpus = slurm.gpus_per_task if slurm.gpus_per_task is not None else (0 if device == "cpu" else 1)
    executor = make_executor(submitit, root / LOGS_DIR / "%j", slurm, gpus)
    job = ShardJob(dict(given), config_file, str(root), slurm.shards)
    try:
        jobs = executor.map_array(job, list(range(1, slurm.shards + 1)))
    except Exception as exc:  # noqa: BLE001 - no sbatch here, a refused partition: say so in one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"cannot submit the shards ({slurm.launcher}): {first}") from None
    say = console.print if console is not None else (lambda *a, **k: None)
    say(f"submitted {len(jobs)} shard(s): job {jobs[0].job_id.split('_')[0]}; logs in {root / LOGS_DIR}")
    failed: list[str] = []
    for index, task in enumerate(jobs, 1):
        try:
            task.result()
            say(f"shard {index}/{slurm.shards} done")
        except Exception as exc:  # noqa: BLE001 - the other shards' rows are still worth merging
            first = (str(exc).strip().splitlines() or [""])[-1]
            failed.append(f"shard {index}/{slurm.shards} (job {task.job_id}): {first}")
            say(f"[red]shard {index}/{slurm.shards} failed[/] (job {task.job_id}); log: {task.paths.stderr}")
    done = [d for d in (shard_dir(root, k, slurm.shards) for k in range(1, slurm.shards + 1)) if d.exists()]
    return (merge(done, root) if done else None), failed
