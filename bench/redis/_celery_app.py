"""The Celery app of bench/redis/celery.py: broker and result backend on BENCH_REDIS_URL."""
import os

from celery import Celery

app = Celery("bench_redis", broker=os.environ["BENCH_REDIS_URL"],
             backend=os.environ["BENCH_REDIS_URL"])
app.conf.update(worker_prefetch_multiplier=4, task_acks_late=False, result_expires=600,
                broker_connection_retry_on_startup=True)


@app.task
def inc(x):
    return x + 1
