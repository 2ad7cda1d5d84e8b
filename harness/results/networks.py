"""The report's view of variants inside networks (context rows): does a faster block survive there?

Per network and configuration, one line per context form and variant: the whole network's median,
its speedup over the eager network (variant ``eager`` in the network's eager form), the share of the
network's time the variant saves against ``eager`` blocks in the same form, and the share of the
network's time its scSE blocks take (from the profiler, eager forms only). On CUDA the host time per
call and the synchronous wall time too: inside a network, a block's launch cost may hide behind the
other layers' kernels, or not.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from harness.results.tables import (
    BASELINE_VARIANT,
    GROUP_COLUMNS,
    at_batch_asked,
    last_rows,
    latency_text,
    mark_text,
    marks,
    number,
    smaller_batch,
)

#: What identifies a network's configuration besides its form.
SETTING_COLUMNS: tuple[str, ...] = (*GROUP_COLUMNS, "network", "channels", "height", "width", "batch")
#: The columns of the table, in order.
TABLE_COLUMNS: tuple[str, ...] = (
    "network input", "context", "variant", "blocks", "median ms [95% CI]", "× eager network",
    "saved vs eager blocks", "scSE share",
)  # fmt: skip


def network_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows measured inside a network, with ``network`` filled (rows from before it: the context)."""
    if "context" not in frame:
        return frame.iloc[0:0]
    rows = frame[frame["context"].fillna("").astype(str) != ""].copy()
    if rows.empty:
        return rows
    if "network" not in rows:
        rows["network"] = None
    rows["network"] = rows["network"].where(rows["network"].notna(), rows["context"])
    if "form" not in rows:
        rows["form"] = None
    return rows


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%" if pd.notna(value) else ""


def _baseline(rows: pd.DataFrame, **match: Any) -> dict[str, Any] | None:
    """The last row matching ``match`` when it is timed at the batch asked for, else None."""
    hit = rows
    for column, value in match.items():
        hit = hit[hit[column] == value]
    if hit.empty or hit.iloc[-1]["status"] != "ok" or not at_batch_asked(hit.iloc[-1:]).iloc[0]:
        return None
    return hit.iloc[-1].to_dict()


def _ratio_marks(row: Mapping[str, Any], base: Mapping[str, Any] | None) -> str:
    """The ``~`` and ``!`` of either side of a ratio, as the block speedup tables carry them."""
    both = set(marks(row)) | (set(marks(base)) if base is not None else set())
    return "".join(f" {m}" for m in ("~", "!") if m in both)


#: Beside a saving larger than the blocks' whole time can explain (``_beyond_blocks``).
BEYOND_BLOCKS = " (more than the blocks take: drift)"


def _beyond_blocks(saved: float, row: Mapping[str, Any], eager: Mapping[str, Any] | None) -> str:
    """``BEYOND_BLOCKS`` when the saving exceeds what the blocks could give or cost: ``eager`` blocks'
    share of their network's time (saving it all), or this variant's own (costing it all). The rest
    of the network then moved between the two runs, and the figure is not the blocks' doing."""
    shares = [number(r.get("scse_share")) for r in (row, eager) if r is not None]
    if not shares or any(pd.isna(v) for v in shares):
        return ""  # no profile (a compiled or graphed form): nothing to hold it to
    return BEYOND_BLOCKS if abs(saved) > max(shares) else ""


def table_rows(frame: pd.DataFrame) -> list[dict[str, str]]:
    """One dict per network row (keys ``TABLE_COLUMNS``, plus ``host / wall ms`` on CUDA)."""
    rows = last_rows(network_frame(frame))
    out: list[dict[str, str]] = []
    if rows.empty:
        return out
    for _, setting in rows.groupby(list(SETTING_COLUMNS), sort=False, dropna=False):
        eager_forms = setting[setting["form"].fillna("eager") == "eager"]
        base = _baseline(eager_forms, variant=BASELINE_VARIANT)
        for record in setting.to_dict("records"):
            out.append(_line(record, setting, base))
    return out


def _line(row: Mapping[str, Any], setting: pd.DataFrame, base: Mapping[str, Any] | None) -> dict[str, str]:
    ok = row["status"] == "ok"
    ms = number(row.get("median_ms")) if ok and smaller_batch(row) is None else float("nan")  # else another batch's
    same_form = _baseline(setting, context=row["context"], variant=BASELINE_VARIANT)
    base_ms = number(base["median_ms"]) if base is not None else float("nan")
    same_form_ms = number(same_form["median_ms"]) if same_form is not None else float("nan")
    where = f"{row['device']} · {row['dtype']} · {row['mode']} · {row['channels']}x{row['height']}x{row['width']} " \
            f"b{row['batch']}"
    text = latency_text(row) + "".join(mark_text(m, row) for m in marks(row)) if ok else str(row["status"]).upper()
    line = {
        "network input": where,
        "context": str(row["context"]),
        "variant": str(row["variant"]),
        "blocks": "" if pd.isna(number(row.get("blocks"))) else str(int(number(row.get("blocks")))),
        "median ms [95% CI]": text,
        "× eager network": f"{base_ms / ms:.2f}{_ratio_marks(row, base)}" if pd.notna(ms) and pd.notna(base_ms)
                           else "",
        "saved vs eager blocks": _percent(1 - ms / same_form_ms) + _ratio_marks(row, same_form)
                                 + _beyond_blocks(1 - ms / same_form_ms, row, same_form)
                                 if pd.notna(ms) and pd.notna(same_form_ms) else "",
        "scSE share": _percent(number(row.get("scse_share"))),
    }
    if str(row["device"]).startswith("cuda"):
        host, wall = number(row.get("host_ms")), number(row.get("wall_ms"))
        line["host / wall ms"] = f"{host:.4g} / {wall:.4g}" if ok and pd.notna(host) else ""
    return line


def networks_markdown(frame: pd.DataFrame) -> list[str]:
    """The "Inside networks" section of report.md; nothing when no row ran inside a network."""
    lines = table_rows(frame)
    if not lines:
        return []
    table = pd.DataFrame(lines)
    return [
        "## Inside networks",
        "",
        "Each variant swapped in for every scSE block of a network, checked against the unmodified network in "
        "float64 and timed as a whole. *× eager network*: the network with `eager` blocks, run eagerly, over "
        "this row (higher is faster; the answer table's speedup is over `eager` blocks in the row's own form, "
        "compiled or graphed, so the two differ there). *saved vs eager blocks*: the share of the network's "
        "time this variant saves against `eager` blocks in the same form (negative: it costs); *(more than the "
        "blocks take: "
        "drift)* where it exceeds the blocks' whole share of the time, so the rest of the network moved "
        "between the runs. *scSE share*: the share of the "
        "network's time spent in its scSE blocks, from the profiler (eager forms only; GPU time on CUDA).",
        "",
        table.to_markdown(index=False, disable_numparse=True),
        "",
    ]
