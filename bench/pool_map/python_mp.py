"""pool_map with Python: multiprocessing.Pool(2).map(x + 1) over range(n), default start method.

Cases: auto (map's own chunksize, ceil(n / (4 * workers)) = 25,000 for 200,000 ints) and chunk1
(chunksize=1, one task per int). The pool is started and warmed up first, and each case runs untimed
maps of its own shape before the timed ones, as the C++ competitor: three for auto, one for chunk1; each timed map's result
is compared in full with [1, ..., n]. tasks_per_s = n / the median map time of the runs.
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
    opt = bc.parse_options("pool_map", "python_mp", uses_placement=False)
    ok_all = True
    # case, n, chunksize, timed maps
    cases = [
        ("auto", bc.pick(opt.mode, 2_000, 200_000, 200_000), None, bc.pick(opt.mode, 1, 3, 5)),
        ("chunk1", bc.pick(opt.mode, 500, 50_000, 200_000), 1, 1),
    ]
    with mp.Pool(2) as pool:
        pool.map(inc, range(1000), chunksize=1)  # both workers up and warm
        for name, n, chunksize, runs in cases:
            expected = list(range(1, n + 1))
            times, ok, got = [], True, bc.Checksum()
            for _ in range(3 if chunksize is None else 1):
                pool.map(inc, range(n), chunksize)  # untimed: the case's own warm-up
            for _ in range(runs):
                t0 = time.perf_counter()
                result = pool.map(inc, range(n), chunksize)
                times.append(time.perf_counter() - t0)
                ok = ok and result == expected
                got = bc.Checksum().add_all(result)
            times.sort()
            rate = n / times[len(times) // 2] if ok else float("nan")
            note = "" if ok else "result differs from [1..n]"
            bc.emit(opt, name, "tasks_per_s", rate, "tasks/s", True, ok, str(got), note)
            ok_all = ok_all and ok
    sys.exit(0 if ok_all else 1)


if __name__ == "__main__":
    main()
