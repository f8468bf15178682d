"""pool_apply_roundtrip with Python: multiprocessing.Pool(2).apply_async(f, (x,)).get(), one at a
time, f(x) = x + 1, default start method. Warm-up calls first; p50/p99 of the timed round trips
in microseconds; every result is checked.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))

import multiprocessing as mp  # noqa: E402
import time  # noqa: E402

import bench_common as bc  # noqa: E402


def inc(x):
    return x + 1


def main():
    opt = bc.parse_options("pool_apply_roundtrip", "python_mp", uses_placement=False)
    warmup, samples = bc.scaled(opt.mode, 200), bc.scaled(opt.mode, 2000)
    rtt, results, error = [], [], ""
    clock = time.perf_counter_ns
    with mp.Pool(2) as pool:
        for i in range(warmup + samples):
            t0 = clock()
            r = pool.apply_async(inc, (i,)).get(timeout=30)
            t1 = clock()
            if i >= warmup:
                rtt.append((t1 - t0) / 1000.0)
            if r != i + 1 and not error:
                error = f"f({i}) returned {r}"
            results.append(r)
    got = bc.Checksum().add_all(results)
    want = bc.Checksum.of_range(1, warmup + samples + 1)
    ok = not error and got == want
    note = error if error else ("" if ok else f"expected {want}")
    for metric, p in (("p50_us", 50), ("p99_us", 99)):
        value = bc.percentile(rtt, p) if ok else float("nan")
        bc.emit(opt, "apply_async_get", metric, value, "us", False, ok, str(got), note)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
