"""Synthetic run folders for the compare, baseline and plot tests: known samples, known answers."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.results.store import RunFolder

CPU_ENV: dict[str, Any] = {
    "device": "cpu",
    "gpu_name": None,
    "cpu_model": "Test CPU @ 2.0GHz",
    "torch": "2.13.0",
    "cuda": None,
    "hostname": "bench-1",
    "threads": 2,
    "git_commit": "abc",
    "date": "2026-01-01T00:00:00+00:00",
}


def case(variant: str = "eager", batch: int = 8, channels: int = 32, height: int = 16, width: int = 16,
         **extra: Any) -> dict[str, Any]:  # fmt: skip
    """The key fields of one case, with the harness's defaults for the rest."""
    fields = {
        "variant": variant, "device": "cpu", "dtype": "float32", "mode": "forward", "batch": batch,
        "channels": channels, "height": height, "width": width, "reduction": 2, "fusion": "add", "bias": False,
    }  # fmt: skip
    fields.update(extra)
    return fields


def row(fields: Mapping[str, Any], samples: Sequence[float] | None = None, status: str = "ok",
        reason: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A result row as the core writes it, its statistics computed from ``samples``."""
    out: dict[str, Any] = dict(fields) | {"status": status, "reason": reason}
    if status == "ok" and samples is not None:
        x = np.asarray(samples, dtype=float)
        q1, med, q3 = np.percentile(x, [25, 50, 75])
        out |= {
            "median_ms": float(med), "iqr_ms": float(q3 - q1), "mean_ms": float(x.mean()), "n_samples": int(x.size),
            "ci_low_ms": float(np.percentile(x, 30)), "ci_high_ms": float(np.percentile(x, 70)),
            "noisy": bool((q3 - q1) / med > 0.10), "samples_ms": [float(v) for v in x],
        }  # fmt: skip
    else:
        out |= {"median_ms": None, "iqr_ms": None, "n_samples": None, "samples_ms": None}
    return out


def noise(median: float, n: int = 30, rel: float = 0.01, seed: int = 0) -> list[float]:
    """``n`` samples around ``median`` with a small relative spread, reproducible."""
    rng = np.random.default_rng(seed)
    return list(median * (1.0 + rel * rng.standard_normal(n)))


def write_run(folder: Path, rows: Iterable[Mapping[str, Any]], env: Mapping[str, Any] | None = None,
              csv: bool = True) -> Path:  # fmt: skip
    """A run folder like the core's: results.jsonl, results.csv written as a run writes it, env.json."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    with (folder / "results.jsonl").open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    if csv:
        RunFolder(folder).write_csv(pd.DataFrame(rows))
    (folder / "env.json").write_text(json.dumps(dict(CPU_ENV if env is None else env)), encoding="utf-8")
    return folder
