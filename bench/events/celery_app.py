"""The Celery side of bench/events' job throughput: one no-op task on a Redis broker.

The broker URL comes from BENCH_REDIS_URL. Results are not stored (task_ignore_result):
the task's only work is to count itself done with one INCR on the same Redis, which is
how the driver (bench/events/bench.py) sees completions without a result backend; that
one round trip is Celery's equivalent of basalt recording a job completed.
"""
import os

import redis
from celery import Celery

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
COUNTER = "bench:done"

app = Celery("bench_events", broker=URL)
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False,
                broker_connection_retry_on_startup=True, worker_send_task_events=False,
                task_serializer="json", accept_content=["json"])

_r = {}


def _redis():
    pid = os.getpid()  # one connection per prefork child
    if pid not in _r:
        _r.clear()
        _r[pid] = redis.Redis.from_url(URL)
    return _r[pid]


@app.task(name="bench.noop")
def noop():
    _redis().incr(COUNTER)
