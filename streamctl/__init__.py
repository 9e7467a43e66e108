"""streamctl: real-time event streaming as code.

The package is laid out as the pipeline of SPEC §1:

    config/        load and validate the project files into frozen, compiled objects
    sources/       where events come from: normalise, HTTP tracking API, webhooks, NDJSON
    contracts/     data contracts (JSON Schema per event name)
    functions/     user event functions: transform_events(events, settings)
    filters/       conditions that choose a destination event type
    mappings/      field references, templates and the mapped payload
    pipeline/      one event through all of the above, with an outcome per sync
    destinations/  the destination catalog, one module per destination
    delivery/      queues, batching, rate limits, retries
    store/         the SQLite store: events, deliveries, attempts, violations
    monitoring/    metrics, status, alert rules and channels
    cli/           the thin Typer layer over all of it
"""

from __future__ import annotations

__version__ = "0.1.0"
