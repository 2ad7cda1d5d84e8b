"""``python -m harness``."""
import os
import sys
import threading
import time

from harness.cli import main

#: How long the threads still running at the end may take to finish before the process exits without them.
THREAD_GRACE_S = 10.0


def exit_without_stuck_threads(code: int, grace_s: float = THREAD_GRACE_S) -> None:
    """Exit with ``code``. Python waits at exit for every non-daemon thread, so a thread a variant
    started and never ended kept ``run`` alive after its report, forever, and its exit status with it
    (a CI step then hit its time limit). Such threads get ``grace_s`` to end; then they are named and
    left behind."""
    deadline = time.monotonic() + grace_s
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon
             and t.is_alive()]  # fmt: skip
    if stuck:
        print(f"warning: {len(stuck)} thread(s) still running after {grace_s:g} s ({', '.join(stuck[:3])}), "
              "started by a variant or a plugin: exiting without them", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def run() -> None:
    """The ``harness`` command, as ``python -m harness``."""
    exit_without_stuck_threads(main())


if __name__ == "__main__":
    run()
