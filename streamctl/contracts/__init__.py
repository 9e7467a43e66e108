"""Data contracts: JSON Schema draft 7 per event name (SPEC §2 "contracts/NAME.yaml").

    contract = compile_contract(spec, name="web")
    result = contract.check(event)  # -> ContractResult (allowed | blocked | omitted, violations)

TODO(issue 3): implementation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamctl.events import Event
from streamctl.pipeline.outcomes import ContractResult


class Contract:
    name: str

    def check(self, event: Event) -> ContractResult:
        raise NotImplementedError


def compile_contract(spec: Mapping[str, Any], name: str) -> Contract:
    """Compile every schema once; raises SpecError (with the node path) for an invalid schema."""
    raise NotImplementedError
