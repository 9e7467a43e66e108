"""Garbage-collector settings for the processes that move events in bulk.

Events are acyclic dicts, freed by reference counting the moment they are stored or
sent; the cyclic collector would still walk every live one each time a few hundred
containers are allocated (a 100-event batch allocates about a thousand, a replay
chunk a hundred times that). In replay's profiles the collector took a fifth to a
third of the CPU of parsing and the pipeline.
"""

from __future__ import annotations

import gc


def tune_garbage_collector() -> None:
    """Freeze what start-up allocated (the project, compiled schemas and templates, the
    modules) so full collections skip it, and collect the young generation far less
    often. The older generations still follow every few young collections: cycles
    do happen (a task's exception and its frames), and each one kept until a full
    collection that never comes is memory that grows with the run. Call this once
    start-up is done."""
    gc.freeze()
    gc.set_threshold(50_000, 5, 5)
