"""The sweep: what to run and running it.

Configuration (``config``) expands into cases (``cases``), optionally one shard of them
(``sharding``); the runner (``runner``) checks and times each case where it is safe to
(``isolation``: in-process or in a worker; ``oom``: out-of-memory retries), and ``resume`` and
``slurm`` finish or spread a sweep. Every case ends as a ``harness.results.record.CaseResult``.
"""
