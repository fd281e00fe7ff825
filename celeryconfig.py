"""Celery settings for signwave, read from the SIGNWAVE_* environment (SPEC §6)."""

import ssl

from kombu import Exchange, Queue

from signwave.runtime import settings as _settings
from signwave.settings import signing_processes

_s = _settings()

broker_url = _s.broker
if broker_url.startswith("rediss://"):
    # Without ssl_* options kombu speaks TLS without checking the server's
    # certificate; check it, unless the URL's ssl_cert_reqs says otherwise.
    broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
broker_connection_retry_on_startup = True
# No acknowledgement bookkeeping in Redis (for the Redis broker): it costs the
# worker four Redis commands and a good share of its CPU per message, and buys
# nothing here. A message lost with a killed worker is a batch that stays
# pending or leased, and emit sends it again once its dispatch or lease is
# older than SIGNWAVE_REDISPATCH_AFTER / SIGNWAVE_LEASE_TTL, as it does after
# Redis loses its data. A warm shutdown still puts unstarted messages back.
broker_transport_options = {"ack_emulation": False}

# Each queue with its own exchange and routing key: a message reaches one queue only.
task_queues = (
    Queue("signwave", Exchange("signwave", type="direct"), routing_key="signwave"),
    Queue("signing", Exchange("signing", type="direct"), routing_key="signing"),
)
task_default_queue = "signwave"
task_default_exchange = "signwave"
task_default_routing_key = "signwave"
task_routes = {"signwave.sign": {"queue": "signing"}}

# Acknowledge after the task ran, and put the message back if its worker
# process died: a batch is never dropped because a worker was killed.
task_acks_late = True
# After a broker connection loss, a running batch finishes and commits under
# its lease (its acknowledgement is lost and the redelivered message is a
# no-op), rather than being stopped and its work thrown away.
worker_cancel_long_running_tasks_on_connection_loss = False
task_reject_on_worker_lost = True
# One process more than the CPUs: while one waits on a round trip, the cores
# keep signing. `--concurrency` overrides it.
worker_concurrency = signing_processes()
# One message at a time per process: a batch waits in the queue, where any
# free worker can take it, not in the buffer of a busy one.
worker_prefetch_multiplier = 1
task_ignore_result = True
result_backend = None
task_serializer = "json"
accept_content = ["json"]
worker_hijack_root_logger = True
# Task events cost three messages a task; workers watched by Flower enable
# them with `-E` (the Procfile does).
worker_send_task_events = False

beat_schedule = {
    "emit": {
        "task": "signwave.emit",
        "schedule": _s.emit_interval,
        # An emit that waited longer than a few intervals is stale: skip it.
        "options": {"expires": max(5.0, 3 * _s.emit_interval)},
    },
}
