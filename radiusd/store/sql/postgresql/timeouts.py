"""Time limits of the store's own transactions (accounting writer, admission, sweeper).

A store slower than a switch's retransmit timeout must fail fast so that accounting goes to the
spool and Access-Requests get code 8, instead of queueing behind a held lock. Values are
milliseconds (`%(ms)s`). Connections the server keeps (the writer's, the batcher's) take the
session form once per connection; the sweeper's pooled transactions take the LOCAL form once
per transaction, which ends with it.
"""
from __future__ import annotations

STATEMENTS = {
    "session": "SET statement_timeout = %(ms)s; SET lock_timeout = %(ms)s",
    "local": "SET LOCAL statement_timeout = %(ms)s; SET LOCAL lock_timeout = %(ms)s",
    # the spool's replay probes a store that was stuck: a short lock wait, so that records
    # arriving meanwhile are not held up behind the probe
    "local_lock": "SET LOCAL lock_timeout = %(ms)s",
    "reset": "RESET statement_timeout; RESET lock_timeout",
}
