"""``python -m harness``."""
import os
import sys
import threading
import time

from harness.cli import main

#: How long Python's own shutdown may wait for threads still running before the process exits without them.
THREAD_GRACE_S = 10.0


def exit_without_stuck_threads(code: int, grace_s: float = THREAD_GRACE_S) -> None:
    """Exit with ``code``. Python waits at exit for every non-daemon thread, so a thread a variant
    started and never ended kept ``run`` alive after its report, forever, and its exit status with it
    (a CI step then hit its time limit). Python's shutdown runs as usual (executors' idle workers,
    torch.compile's among them, end there, and atexit handlers run); a daemon watchdog ends the
    process with ``code`` if that shutdown is still waiting after ``grace_s``, naming the threads."""

    def watchdog() -> None:
        time.sleep(grace_s)
        stuck = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon
                 and t.is_alive()]  # fmt: skip
        print(f"warning: {len(stuck)} thread(s) still running {grace_s:g} s after the command ended "
              f"({', '.join(stuck[:3])}), started by a variant or a plugin: exiting without them", file=sys.stderr)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(code)

    threading.Thread(target=watchdog, name="exit-watchdog", daemon=True).start()
    sys.exit(code)


def run() -> None:
    """The ``harness`` command, as ``python -m harness``."""
    exit_without_stuck_threads(main())


if __name__ == "__main__":
    run()
