"""Does the first variant of a configuration read slower? eager and a twin of it (the same build,
another name) in both orders, alternating, N runs each; the twin's ratio to eager by position."""
import json
import statistics
import sys
import time

import harness
from variants import register
from variants.registry import get_variant as registered

eager = registered("eager")
register("eager_twin", "eager again, under another name", devices=eager.devices, dtypes=eager.dtypes,
         modes=eager.modes, fusions=eager.fusions)(eager.build)

max_time = float(sys.argv[1]); reps = int(sys.argv[2])
out = []
for rep in range(reps):
    for order in ("eager,eager_twin,mean_squeeze", "eager_twin,eager,mean_squeeze"):
        t = time.time()
        f = harness.run(device="cpu", variants=order, modes="forward", max_time_s=max_time, write=False)
        for (shape, mode), g in f.groupby(["channels", "mode"]):
            m = dict(zip(g.variant, g.median_ms))
            first = order.split(",")[0]
            out.append({"rep": rep, "order": order, "C": int(shape), "first": first,
                        "twin_over_eager": m["eager_twin"] / m["eager"],
                        "first_over_second": m[first] / m[order.split(",")[1]],
                        "eager": m["eager"], "twin": m["eager_twin"]})
        print(f"rep {rep} {order} {time.time() - t:.0f} s", flush=True)
json.dump(out, open(f"/tmp/pos/pos_{max_time}.json", "w"), indent=1)
for r in out:
    print(r)
ratios = [r["first_over_second"] for r in out]
print("first/second: median", statistics.median(ratios), "min", min(ratios), "max", max(ratios))
