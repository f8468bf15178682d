"""redis scenario, Celery (Debian's python3-celery): a real worker (prefork, 2 processes), broker
and result backend on the scenario's redis-server. apply_async of trivial tasks one by one then
every result; delay(x).get() round trips. Every result is checked."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "common"))
sys.path.insert(0, HERE)
import bench_common as bc  # noqa: E402
import _pool_driver  # noqa: E402
import _redis_server  # noqa: E402

# This file is named celery.py: the real celery must be found first, so its folder leaves the path
# (the helpers above are imported already; the app is loaded by its path below).
sys.path[:] = [p for p in sys.path if p not in ("", HERE)]


def main():
    opt = bc.parse_options("redis", "celery", uses_placement=False)
    try:
        import celery  # noqa: F401
    except ImportError:
        _pool_driver.emit_all_na(opt, "python3-celery is not installed")
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
        ok_all = _pool_driver.run(
            opt, lambda i: inc.apply_async((i,)), lambda r: r.get(timeout=600),
            bc.pick(opt.mode, 50, 2000, 8000), bc.pick(opt.mode, 30, 500, 2000),
            "not measured for Celery (a map is a group of tasks; queues are not Celery's API)")
    finally:
        _pool_driver.stop([worker])
        app.close()
        _redis_server.stop(server)
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
