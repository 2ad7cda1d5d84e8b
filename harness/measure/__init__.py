"""Measuring one case: time, statistics, correctness and the metrics beside them.

Nothing here knows about sweeps or files. ``timing`` (with ``cuda_clock`` and ``cpu_wait``) times
a callable, ``stats`` and ``figures`` turn raw samples into the figures a row reports,
``correctness`` judges a result against its float64 reference, and ``metrics`` lists the metrics
measured around the timed loop (``flops`` with ``flop_formula``, ``memory``, ``telemetry``, ``bandwidth``,
``profiling``). ``envinfo`` and ``allocator`` describe and steady the machine measured on.
"""
