"""Contract validators compared, and the pipeline hot path (normalise, contract, Pipeline.process).

    .venv/bin/python benchmarks/contracts.py [--events N] [--rounds R]

Uses the repository's default project (contracts/web.yaml, syncs/events-to-file.yaml)
and the shared deterministic event mix (../shared/bench/gen_events.py). Cases:

1. validators on the pass path: the `Order Completed` properties schema checked on
   valid orders with jsonschema (`is_valid`, the fastest jsonschema call), and with
   fastjsonschema (generated code), which streamctl uses to decide;
2. the fail path: jsonschema's full report (`iter_errors`), which streamctl runs only
   for a value fastjsonschema rejected;
3. `Contract.check` on the event mix (target: 50,000 events/s per core);
4. `normalise` on the event mix;
5. `Pipeline.process` of the events-to-file sync (contract, filters, mappings, payload),
   in batches of 500 as replay would.

Rates are over CPU time of this process (per core); figures are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema
import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT.parent / "shared" / "bench" / "gen_events.py"
BATCH = 500


def load_events(n: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "events.ndjson"
        subprocess.run([sys.executable, str(GENERATOR), str(n), str(out)], check=True)
        return [orjson.loads(line) for line in out.read_bytes().splitlines()]


def rate(run: Callable[[], object], count: int, rounds: int) -> float:
    best = 0.0
    for _ in range(rounds):
        start = time.process_time()
        run()
        spent = time.process_time() - start
        best = max(best, count / spent if spent else 0.0)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from streamctl.contracts import compile_contract
    from streamctl.sources.normalise import normalise
    from streamctl.testing import load, pipeline_for

    events = load_events(args.events)
    spec = yaml.safe_load((ROOT / "contracts" / "web.yaml").read_text())
    order_schema = next(e["properties"] for e in spec["events"] if e["name"] == "Order Completed")
    orders = [e["properties"] for e in events if e.get("event") == "Order Completed"]
    valid = [p for p in orders if jsonschema.Draft7Validator(order_schema).is_valid(p)]
    invalid = [{**p, "total": -1, "currency": "eur"} for p in valid]

    detailed = jsonschema.Draft7Validator(order_schema)
    fast = fastjsonschema.compile(order_schema, use_default=False)

    def fast_all() -> None:
        for p in valid:
            fast(p)

    print(
        f"{len(events):,} events ({len(valid):,} valid orders), best of {args.rounds} rounds, per core"
    )
    print("validators, pass path (Order Completed properties):")
    print(
        f"  jsonschema is_valid        {rate(lambda: [detailed.is_valid(p) for p in valid], len(valid), args.rounds):>10,.0f} /s"
    )
    print(f"  fastjsonschema             {rate(fast_all, len(valid), args.rounds):>10,.0f} /s")
    print("fail path (full error report, only for rejected values):")
    print(
        f"  jsonschema iter_errors     {rate(lambda: [list(detailed.iter_errors(p)) for p in invalid], len(invalid), args.rounds):>10,.0f} /s"
    )

    contract = compile_contract(spec, "web")
    check_rate = rate(lambda: [contract.check(e) for e in events], len(events), args.rounds)
    print(f"Contract.check, event mix      {check_rate:>10,.0f} events/s  (target 50,000)")
    normalised = [normalise(e) for e in events]
    print(
        f"normalise, event mix           {rate(lambda: [normalise(e) for e in events], len(events), args.rounds):>10,.0f} events/s"
    )

    project = load(ROOT)
    pipeline = pipeline_for(project)

    def process_all() -> None:
        for start in range(0, len(normalised), BATCH):
            pipeline.process("web", normalised[start : start + BATCH], syncs=["events-to-file"])

    print(
        f"Pipeline.process events-to-file {rate(process_all, len(events), args.rounds):>9,.0f} events/s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
