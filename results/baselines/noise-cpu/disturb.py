"""Another tenant on the VM: copies 256 MB back and forth for 10 s, then rests 20 s, until killed."""
import time
import numpy as np
a = np.ones(32 * 2**20); b = np.empty_like(a)
while True:
    end = time.time() + 10
    while time.time() < end:
        b[:] = a
        a[:] = b
    time.sleep(20)
