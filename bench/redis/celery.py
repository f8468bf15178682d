"""redis scenario, Celery (Debian's python3-celery): a real worker (prefork, 2 processes), broker
and result backend on the scenario's redis-server. apply_async of trivial tasks one by one then
every result; delay(x).get() round trips. Every result is checked."""
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "common"))
sys.path.insert(0, HERE)
import bench_common as bc  # noqa: E402
import _redis_server  # noqa: E402

# This file is named celery.py: the real celery must be found first, so its folder leaves the path
# (the helpers above are imported already; the app is loaded by its path below).
sys.path[:] = [p for p in sys.path if p not in ("", HERE)]

NA_CASES = [("map_auto", "tasks_per_s", "tasks/s", True), ("queue_1by1", "items_per_s", "items/s",
            True), ("queue_batched", "items_per_s", "items/s", True)]


def main():
    opt = bc.parse_options("redis", "celery", uses_placement=False)
    try:
        import celery  # noqa: F401
    except ImportError:
        for case, metric, unit, hib in [("apply_async_1by1", "tasks_per_s", "tasks/s", True),
                                        ("apply_async_get", "p50_us", "us", False),
                                        ("apply_async_get", "p99_us", "us", False)] + NA_CASES:
            bc.emit_na(opt, case, metric, unit, hib, "python3-celery is not installed")
        return 0
    url, server = _redis_server.start()
    os.environ["BENCH_REDIS_URL"] = url
    import importlib.util
    spec = importlib.util.spec_from_file_location("_celery_app", os.path.join(HERE, "_celery_app.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules["_celery_app"] = mod
    spec.loader.exec_module(mod)
    app, inc = mod.app, mod.inc
    # `celery worker`, with the real celery imported before this folder joins the path.
    launcher = ("import sys; sys.path[:] = [p for p in sys.path if p not in ('', %r)]; "
                "from celery.__main__ import main; sys.path.append(%r); "
                "sys.argv = ['celery', '-A', '_celery_app', 'worker', '--pool', 'prefork', "
                "'--concurrency', '2', '--loglevel', 'WARNING', '--without-gossip', "
                "'--without-mingle', '--without-heartbeat']; main()") % (HERE, HERE)
    worker = subprocess.Popen([sys.executable, "-c", launcher], cwd="/",
                              stdout=subprocess.DEVNULL, stderr=sys.stderr)
    ok_all = True
    try:
        for i in range(20):  # the worker is up and both processes warm
            assert inc.delay(i).get(timeout=30) == i + 1
        n = bc.pick(opt.mode, 50, 2000, 8000)
        t0 = time.monotonic_ns()
        rs = [inc.apply_async((i,)) for i in range(n)]
        got = bc.Checksum()
        for r in rs:
            got.add(r.get(timeout=600))
        t1 = time.monotonic_ns()
        del rs, r  # their __del__ talks to the server: not after it has stopped
        want = bc.Checksum.of_range(1, n + 1)
        ok = got == want
        ok_all &= ok
        bc.emit(opt, "apply_async_1by1", "tasks_per_s", n / ((t1 - t0) * 1e-9), "tasks/s", True,
                ok, str(got))
        m = bc.pick(opt.mode, 30, 500, 2000)
        rtt = []
        got = bc.Checksum()
        for i in range(m):
            t0 = time.monotonic_ns()
            got.add(inc.delay(i).get(timeout=60))
            rtt.append((time.monotonic_ns() - t0) * 1e-3)
        ok = got == bc.Checksum.of_range(1, m + 1)
        ok_all &= ok
        for metric, p in (("p50_us", 50), ("p99_us", 99)):
            bc.emit(opt, "apply_async_get", metric, bc.percentile(rtt, p), "us", False, ok,
                    str(got))
        for case, metric, unit, hib in NA_CASES:
            bc.emit_na(opt, case, metric, unit, hib, "not measured for Celery (a map is a group "
                       "of tasks; queues are not Celery's API)")
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        app.close()
        _redis_server.stop(server)
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
