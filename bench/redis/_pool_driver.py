"""The driver loop that bench/redis/celery.py and rq.py share: the pool cases timed the same way
for every Python task queue, given how to submit a trivial task (inc(i)) and how to wait for its
result. apply_async_1by1: n tasks submitted one by one, then every result (tasks/s);
apply_async_get: m submit-then-wait round trips (p50/p99 in µs). Every result is checked; the
cases a task queue does not have are reported n/a."""
import signal
import subprocess
import time

import bench_common as bc

POOL_CASES = [("apply_async_1by1", "tasks_per_s", "tasks/s", True),
              ("apply_async_get", "p50_us", "us", False),
              ("apply_async_get", "p99_us", "us", False)]
OTHER_CASES = [("map_auto", "tasks_per_s", "tasks/s", True),
               ("queue_1by1", "items_per_s", "items/s", True),
               ("queue_1by1_50clients", "items_per_s", "items/s", True),
               ("queue_batched", "items_per_s", "items/s", True)]


def emit_all_na(opt, why):
    """Every case n/a (the task queue is not installed)."""
    for case, metric, unit, hib in POOL_CASES + OTHER_CASES:
        bc.emit_na(opt, case, metric, unit, hib, why)


def run(opt, submit, wait, n, m, other_cases_note):
    """Times both pool cases; submit(i) returns a handle, wait(handle) its result (i + 1).
    Returns whether every result was right. The handles are dropped before returning (a task
    queue's handle may talk to the server when it goes)."""
    ok_all = True
    t0 = time.monotonic_ns()
    handles = [submit(i) for i in range(n)]
    got = bc.Checksum()
    for h in handles:
        got.add(wait(h))
    t1 = time.monotonic_ns()
    handles = h = None
    ok = got == bc.Checksum.of_range(1, n + 1)
    ok_all &= ok
    bc.emit(opt, "apply_async_1by1", "tasks_per_s", n / ((t1 - t0) * 1e-9), "tasks/s", True, ok,
            str(got))
    rtt = []
    got = bc.Checksum()
    for i in range(m):
        t0 = time.monotonic_ns()
        got.add(wait(submit(i)))
        rtt.append((time.monotonic_ns() - t0) * 1e-3)
    ok = got == bc.Checksum.of_range(1, m + 1)
    ok_all &= ok
    for metric, p in (("p50_us", 50), ("p99_us", 99)):
        bc.emit(opt, "apply_async_get", metric, bc.percentile(rtt, p), "us", False, ok, str(got))
    for case, metric, unit, hib in OTHER_CASES:
        bc.emit_na(opt, case, metric, unit, hib, other_cases_note)
    return ok_all


def stop(procs):
    """SIGTERM to every worker process, then SIGKILL to one still there after 20 s."""
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
