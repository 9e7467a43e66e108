#!/usr/bin/env python3
"""Write examples/events.ndjson: deterministic, realistic Segment-spec events.

    python examples/generate_events.py                 # 1,200 events, seed 7
    python examples/generate_events.py 100000 big.ndjson --seed 3

The mix follows the Segment spec's common calls: 40% track "Order Completed" (with
products, coupon, currency), 20% other tracks (Product Viewed, Signed Up, Demo
Requested), 20% identify, 15% page, 5% group. The same seed always gives the same file.
"""

from __future__ import annotations

import argparse
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

START = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
PLANS = ("free", "pro", "team")
PAGES = (("Home", "/"), ("Pricing", "/pricing"), ("Docs", "/docs"), ("Blog", "/blog"))
BROWSERS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
)
LOCALES = ("en-US", "en-GB", "de-DE", "fr-FR", "es-ES")


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(rnd: random.Random, index: int) -> dict[str, Any]:
    user_id = f"user_{rnd.randrange(5000)}"
    email = f"{user_id}@example.com"
    moment = START + timedelta(milliseconds=index * 731)
    base: dict[str, Any] = {
        "messageId": str(uuid.UUID(int=rnd.getrandbits(128))),
        "userId": user_id,
        "anonymousId": f"anon-{rnd.randrange(10**6)}",
        "timestamp": iso(moment),
        "originalTimestamp": iso(moment),
        "sentAt": iso(moment + timedelta(milliseconds=rnd.randrange(20, 400))),
        "context": {
            "ip": f"203.0.113.{rnd.randrange(256)}",
            "locale": rnd.choice(LOCALES),
            "userAgent": rnd.choice(BROWSERS),
            "library": {"name": "analytics.js", "version": "5.2.0"},
            "traits": {"email": email, "plan": rnd.choice(PLANS)},
        },
    }
    roll = rnd.random()
    if roll < 0.40:
        return {
            **base,
            "type": "track",
            "event": "Order Completed",
            "properties": order(rnd, index),
        }
    if roll < 0.60:
        name = rnd.choice(("Product Viewed", "Signed Up", "Demo Requested"))
        properties: dict[str, Any] = {"source": rnd.choice(("ad", "email", "organic"))}
        if name == "Product Viewed":
            properties["product_id"] = f"p{rnd.randrange(900)}"
        elif name == "Signed Up":
            properties["plan"] = rnd.choice(PLANS)
        else:
            properties["company_size"] = rnd.choice(("1-10", "11-50", "51-200", "201+"))
        return {**base, "type": "track", "event": name, "properties": properties}
    if roll < 0.80:
        traits = {"email": email, "name": f"User {user_id[5:]}", "consent": rnd.random() < 0.7}
        return {**base, "type": "identify", "traits": traits}
    if roll < 0.95:
        title, path = rnd.choice(PAGES)
        url = f"https://shop.example.com{path}"
        page = {"path": path, "title": title, "url": url, "referrer": "https://www.google.com/"}
        base["context"]["page"] = page
        return {**base, "type": "page", "name": title, "properties": page}
    group_traits = {"name": f"Company {rnd.randrange(100)}", "seats": rnd.randrange(1, 500)}
    return {**base, "type": "group", "groupId": f"g{rnd.randrange(100)}", "traits": group_traits}


def order(rnd: random.Random, index: int) -> dict[str, Any]:
    products = [
        {
            "product_id": f"p{rnd.randrange(900)}",
            "sku": f"SKU-{rnd.randrange(10**5):05d}",
            "price": round(rnd.uniform(3, 200), 2),
            "quantity": rnd.randrange(1, 4),
        }
        for _ in range(rnd.randrange(1, 4))
    ]
    total = round(sum(p["price"] * p["quantity"] for p in products), 2)
    return {
        "order_id": f"o{index:06d}",
        "total": total,
        "revenue": round(total * 0.9, 2),
        "currency": "USD",
        "coupon": rnd.choice((None, None, "BF2026")),
        "products": products,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", nargs="?", type=int, default=1200)
    parser.add_argument(
        "output", nargs="?", type=Path, default=Path(__file__).with_name("events.ndjson")
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rnd = random.Random(args.seed)
    with args.output.open("w", encoding="utf-8") as out:
        for index in range(args.count):
            out.write(json.dumps(event(rnd, index), separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
