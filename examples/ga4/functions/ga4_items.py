"""Segment ecommerce products -> GA4 items (item_id, item_variant, price, quantity).

GA4 needs `item_id` or `item_name` on every item; Segment's spec calls them
`product_id` and `name`. A mapping cannot rename keys inside each array element, so
this event function adds `properties.ga4_items` for the `purchase` mapping to use.
"""


def transform_events(events, settings):
    for event in events:
        properties = event.get("properties") or {}
        products = properties.get("products")
        if isinstance(products, list):
            properties["ga4_items"] = [
                _item(product) for product in products if isinstance(product, dict)
            ]
    return events


def _item(product):
    item = {
        "item_id": product.get("product_id") or product.get("sku"),
        "item_name": product.get("name"),
        "item_variant": product.get("sku"),
        "price": product.get("price"),
        "quantity": product.get("quantity"),
    }
    return {key: value for key, value in item.items() if value is not None}
