"""The SQL of leases, shared by the PostgreSQL store and its queue (docs/store.md).

A node (one process) holds a row of `deliveries` or `queue` when the row's `owner` is
the node's id; the hold lasts while the node's heartbeat (`nodes.heartbeat_at`, in
the database's clock) is younger than the lease. `FREE_FOR_ME` is the condition on
a row that this node may take: its own, no one's, or a silent node's. Its named
parameters: `%(me)s` (this node's id) and `%(lease)s` (seconds).
"""

from __future__ import annotations

from typing import Any

import psycopg

Connection = psycopg.Connection[tuple[Any, ...]]

# The database's clock, in Unix seconds: leases are compared in one clock, whatever
# the clocks of the machines that hold them.
DB_NOW = "extract(epoch FROM clock_timestamp())::double precision"
FREE_FOR_ME = (
    "(owner IS NULL OR owner = %(me)s OR NOT EXISTS (SELECT 1 FROM nodes n"
    f" WHERE n.id = owner AND n.heartbeat_at >= {DB_NOW} - %(lease)s))"
)
OPEN = "status IN ('pending', 'retrying')"
