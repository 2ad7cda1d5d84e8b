"""Results: the typed record of a case, the run folder that stores it, and what is made from it.

``record`` is one case's result and its row; ``store`` reads and writes run folders; ``report``,
``profile_report`` and ``plots`` render a run; ``compare`` judges two runs; ``merge`` joins runs;
``baselines`` keeps one run per device model.
"""
