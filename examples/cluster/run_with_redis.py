#!/usr/bin/env python3
"""Runs an examples/cluster program against a redis-server of its own: a free loopback port, a
password, no files kept; the server is stopped by its pid. Checks the seed's ten results.
Exits 0 (skipped, with a message) when redis-server is not installed."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def main():
    exe = sys.argv[1]
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(server, os.X_OK):
        print("skipped: redis-server is not installed")
        return 0
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    password = "example-secret"
    with tempfile.TemporaryDirectory() as d:
        srv = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--requirepass",
                                password, "--save", "", "--appendonly", "no", "--dir", d],
                               stdout=subprocess.DEVNULL)
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            url = "redis://:%s@127.0.0.1:%d/0" % (password, port)
            out = subprocess.run([exe, url], capture_output=True, text=True, timeout=100)
            sys.stdout.write(out.stdout)
            sys.stderr.write(out.stderr)
            got = [l for l in out.stdout.splitlines() if l.startswith("> got ")]
            if out.returncode != 0 or len(got) != 10:
                print("FAILED: exit %d, %d results" % (out.returncode, len(got)))
                return 1
            return 0
        finally:
            srv.terminate()
            srv.wait()


if __name__ == "__main__":
    sys.exit(main())
