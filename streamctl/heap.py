"""Garbage-collector settings for the processes that move events in bulk.

Events are acyclic dicts, freed by reference counting the moment they are stored or
sent; the cyclic collector would still walk every live one each time a few hundred
containers are allocated (a 100-event batch allocates about a thousand, a replay
chunk a hundred times that). Replay profiles found no cycle to collect, yet the
collector took a fifth to a third of the CPU of parsing and the pipeline.
"""

from __future__ import annotations

import gc


def tune_garbage_collector() -> None:
    """Freeze what start-up allocated (the project, compiled schemas and templates, the
    modules) so full collections skip it, and collect the young generation far less
    often. Cycles are still collected, only later. Call once start-up is done."""
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
