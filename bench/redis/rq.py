"""redis scenario, RQ (Debian's python3-rq): 2 real workers (`rq worker`, each forks a work horse
per job) on the scenario's redis-server. Jobs enqueued one by one, timed until every one has
finished; enqueue-then-wait round trips (the result polled every 0.5 ms). Every result is
checked."""
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "common"))
import bench_common as bc  # noqa: E402
import _pool_driver  # noqa: E402
import _redis_server  # noqa: E402

# This file is named rq.py: the real rq must be found first.
sys.path[:] = [p for p in sys.path if p not in ("", HERE)]


def main():
    opt = bc.parse_options("redis", "rq", uses_placement=False)
    try:
        import redis
        import rq
    except ImportError:
        _pool_driver.emit_all_na(opt, "python3-rq is not installed")
        return 0
    sys.path.append(HERE)
    import _rq_tasks
    url, server = _redis_server.start()
    conn = redis.Redis.from_url(url)
    qname = "bench-rq-%d" % os.getpid()
    q = rq.Queue(qname, connection=conn)
    launcher = ("import sys; sys.path[:] = [p for p in sys.path if p not in ('', %r)]; "
                "from rq.cli import main; sys.path.append(%r); "
                "sys.argv = ['rq', 'worker', '-u', %r, '--logging_level', 'WARNING', %r]; main()"
                ) % (HERE, HERE, url, qname)
    workers = [subprocess.Popen([sys.executable, "-c", launcher], cwd="/",
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(2)]
    ok_all = True

    def wait_done(job, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            st = job.get_status(refresh=True)
            if st == "finished":
                return job.return_value()
            if st == "failed":
                raise RuntimeError("job failed")
            time.sleep(0.0005)
        raise TimeoutError("job not done")

    try:
        for i in range(4):
            assert wait_done(q.enqueue(_rq_tasks.inc, i), 60) == i + 1
        ok_all = _pool_driver.run(
            opt, lambda i: q.enqueue(_rq_tasks.inc, i), lambda j: wait_done(j, 600),
            bc.pick(opt.mode, 20, 300, 1200), bc.pick(opt.mode, 10, 100, 400),
            "not measured for RQ (no map; queues are not RQ's API)")
    finally:
        _pool_driver.stop(workers)
        try:
            q.delete(delete_jobs=True)
        except Exception:
            pass
        _redis_server.stop(server)
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
