"""The task of bench/redis/rq.py (RQ imports it by name in its workers)."""


def inc(x):
    return x + 1
