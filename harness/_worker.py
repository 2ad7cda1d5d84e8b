"""The child side of ``--isolate``: ``python -m harness._worker`` runs cases sent by the parent.

Protocol: one JSON object a line. The worker says ``{"ready": pid}`` once torch is imported, then
answers each request line on stdin with ``{"row": {...}}`` on its own copy of stdout. File
descriptor 1 itself is pointed at stderr, so a variant that prints cannot corrupt the protocol.
The worker ignores SIGINT (the parent owns Ctrl-C and lets the case in progress finish) and exits
when its stdin closes or its parent dies, so a killed sweep leaves no orphan behind.
"""
from __future__ import annotations

import faulthandler
import gc
import importlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any


def send(proto: IO[str], message: dict[str, Any]) -> None:
    from harness.results.record import jsonable

    proto.write(json.dumps(message, default=jsonable, allow_nan=True) + "\n")
    proto.flush()


def watch_parent(parent: int, every_s: float = 0.5) -> None:
    """Exit as soon as the parent is gone (reparented), even in the middle of a hung case."""

    def loop() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(3)
            time.sleep(every_s)

    threading.Thread(target=loop, name="parent-watch", daemon=True).start()


def run_request(request: dict[str, Any], kept: dict[tuple[object, ...], Any]) -> dict[str, Any]:
    """One row for one request; any failure outside ``run_case`` is an error row, not a dead worker.

    ``kept``: what the worker keeps from request to request, as the parent's executor does: the
    clocks, the metric set (FLOPs counted once per configuration) and the shared input draws."""
    import torch

    from harness.measure.metrics import metric_set
    from harness.measure.timing import TimingPolicy
    from harness.results.record import Status
    from harness.sweep.cases import Case
    from harness.sweep.runner import clock_for, failed, one_line, run_case
    from harness.sweep.subject import SharedInputs
    from variants.registry import all_variants, find_variant

    case = Case(**request["case"])
    try:
        variant = all_variants().get(case.variant)
        if variant is None and request.get("module"):
            importlib.import_module(request["module"])  # a module that registers the variant (or the one a form wraps)
            variant = all_variants().get(case.variant)
        if variant is None:  # a form of a registered variant (graphed_<name>), made only once none is registered
            variant = find_variant(case.variant)
        if variant is None:
            raise LookupError(f"variant {case.variant!r} is not registered in the worker process; register it in "
                              "an importable module or a harness.variants plugin")  # fmt: skip
        if request.get("threads"):
            torch.set_num_threads(int(request["threads"]))
        key = ("clock", case.device, str(request["clock_cache"]))
        if key not in kept:
            kept[key] = clock_for(*key[1:])
        trace_dir = request.get("trace_dir")
        metrics_key = ("metrics", request.get("peak_bytes_per_s"), trace_dir)
        if metrics_key not in kept:
            kept[metrics_key] = metric_set(request.get("peak_bytes_per_s"),
                                           None if trace_dir is None else Path(trace_dir))  # fmt: skip
        measures, inputs = kept[metrics_key], kept.setdefault(("inputs",), SharedInputs())
        return run_case(case, variant, kept[key], TimingPolicy(**request["timing"]), int(request["seed"]),
                        bool(request["explicit"]), str(request["cache"]), measures, inputs).to_row()  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - report it as the case's row; the worker lives on
        threads = torch.get_num_threads()
        return failed(case, Status.ERROR, one_line(exc), metric_set(), threads, request.get("cache")).to_row()


def main() -> int:
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.enable()  # a segfault or abort leaves its Python stack in the worker log
    watch_parent(os.getppid())
    import harness.sweep.runner  # noqa: F401  (torch and the variants, before saying ready)

    gc.freeze()  # what import made is never garbage: each case's collections skip it (see CaseExecutor)
    send(proto, {"ready": os.getpid()})
    from harness import interrupts

    kept: dict[tuple[object, ...], Any] = {}
    with interrupts.handled():  # SIGINT is ignored here: a KeyboardInterrupt is a variant's own, an error row
        for line in sys.stdin:
            if line.strip():
                send(proto, {"row": run_request(json.loads(line), kept)})
                gc.freeze()  # the case ended with a full collection: what is left is alive
    gc.unfreeze()  # frozen objects are never freed at exit; some bindings (triton's) then report leaks
    return 0


if __name__ == "__main__":
    sys.exit(main())
