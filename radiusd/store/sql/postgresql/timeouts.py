"""Time limits of the store's own transactions (accounting writer, admission, sweeper).

A store slower than a switch's retransmit timeout must fail fast so that accounting goes to the
spool and Access-Requests get code 8, instead of queueing behind a held lock. Values are
milliseconds (`%(ms)s`). Connections the server keeps (the writer's, the batcher's) take the
session form once per connection; the sweeper's pooled transactions take the LOCAL form once
per transaction, which ends with it.

The kept connections also plan without sequential scans: their statements are prepared once
and run for hours, and PostgreSQL fixes a prepared statement's generic plan from the statistics
it has when the plan is made. On a new store (`active_calls` empty and never analyzed) that plan
is a sequential scan of the open calls, run by every batch as the table fills — measured: one
scan of the whole table per admission batch, most of the store's CPU. Every statement on these
connections has an index made for it; with sequential scans priced out, the plan is that index
whatever the statistics say.
"""
from __future__ import annotations

STATEMENTS = {
    "session": "SET statement_timeout = %(ms)s; SET lock_timeout = %(ms)s; SET enable_seqscan = off",
    "local": "SET LOCAL statement_timeout = %(ms)s; SET LOCAL lock_timeout = %(ms)s",
    # the spool's replay probes a store that was stuck: a short lock wait, so that records
    # arriving meanwhile are not held up behind the probe
    "local_lock": "SET LOCAL lock_timeout = %(ms)s",
    "reset": "RESET statement_timeout; RESET lock_timeout; RESET enable_seqscan",
}
