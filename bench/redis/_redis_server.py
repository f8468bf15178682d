"""The redis scenario's server for a Python competitor (the C++ side: _redis_server.hpp):
BENCH_REDIS_URL when the runner started one, otherwise a redis-server of its own on a free
loopback port, without persistence, stopped by its pid."""
import ctypes
import os
import socket
import subprocess
import time


def _die_with_parent():
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


def start():
    """(url, process or None). The runner calls it too, and passes the URL on in BENCH_REDIS_URL."""
    url = os.environ.get("BENCH_REDIS_URL")
    if url:
        return url, None
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen(["/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--logfile", "/dev/null"],
                            stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            break
        except OSError:
            time.sleep(0.01)
    return "redis://127.0.0.1:%d/0" % port, proc


def stop(proc):
    if proc is not None:
        proc.terminate()
        proc.wait()
