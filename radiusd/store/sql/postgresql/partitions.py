"""Monthly CDR partitions (radiusd.store.partitions) on PostgreSQL. `{partition}` is a name made
by partition_name (cdrs_YYYY_MM, digits only): identifiers cannot be bound parameters."""
from __future__ import annotations

STATEMENTS = {
    "is_partitioned": "SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass('cdrs')",
    "attached": "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = to_regclass('cdrs')",
    "exists": "SELECT to_regclass(%(name)s) IS NOT NULL",
    # rows outside every monthly partition, per month (UTC); the default partition is small when
    # partitions are made ahead, so a scan of it is cheap
    "default_rows_by_month": "SELECT date_trunc('month', disconnect_time AT TIME ZONE 'UTC') AS month, count(*) "
                             "FROM cdrs_default GROUP BY 1 ORDER BY 1",
    "default_rows_in_range": "SELECT count(*) FROM cdrs_default "
                             "WHERE disconnect_time >= %(lower)s AND disconnect_time < %(upper)s",
    # LOCK_TIMEOUT_MS, shorter than deadlock_timeout: in a cycle we give up first
    "lock_timeout": "SET LOCAL lock_timeout = %(ms)s",
    # parent first, then the default partition: the order an insert takes them
    "lock_parent": "LOCK TABLE ONLY cdrs IN SHARE UPDATE EXCLUSIVE MODE",
    "lock_default": "LOCK TABLE cdrs_default IN ACCESS EXCLUSIVE MODE",
    "create": "CREATE TABLE {partition} (LIKE cdrs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
    "move": "WITH moved AS (DELETE FROM cdrs_default WHERE disconnect_time >= %(lower)s "
            "AND disconnect_time < %(upper)s RETURNING *) INSERT INTO {partition} SELECT * FROM moved",
    "attach": "ALTER TABLE cdrs ATTACH PARTITION {partition} FOR VALUES FROM (%(lower)s) TO (%(upper)s)",
}
