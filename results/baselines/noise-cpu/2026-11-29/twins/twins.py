"""The answer table's verdict between eager and its twin (the same build under another name,
``twin_mod.py``): any 'clear' is false. REPS runs at a budget, in both orders, forward and train,
the default CPU shapes; with ``control``, the control is measured beside them and sets the margin.

    python twins.py MAX_TIME REPS [PROCESSES] [control]
"""
import sys
import tempfile
from pathlib import Path

import twin_mod  # noqa: F401  (registers eager_twin where worker processes can import it too)

import harness

max_time, reps = float(sys.argv[1]), int(sys.argv[2])
processes = int(sys.argv[3]) if len(sys.argv) > 3 else 1
extra = ",control" if "control" in sys.argv[4:] else ""
verdicts = []
for rep in range(reps):
    for order in ("eager,eager_twin", "eager_twin,eager"):
        out = Path(tempfile.mkdtemp()) / "run"
        harness.run(device="cpu", variants=order + extra, max_time_s=max_time, out=out, processes=processes)
        text = (out / "report.md").read_text()
        table = text.split("## Which variant to run")[1].split("\n## ")[0]
        for line in table.splitlines():
            if line.startswith("control on"):
                print(line)
            if line.startswith("| cpu"):
                cells = [c.strip() for c in line.strip("|").split("|")]
                verdicts.append((order + extra, cells[0], cells[1], cells[2], cells[4], cells[5]))
for v in verdicts:
    print(v)
clear = [v for v in verdicts if v[5].startswith("clear")]
print(f"budget {max_time} s, {processes} process(es){', with the control' if extra else ''}: "
      f"{len(clear)} 'clear' of {len(verdicts)}")
