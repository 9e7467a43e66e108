"""The HTTP client every lane shares: httpx's, minus a cookie jar and a reference cycle.

    client = default_client()          # LeanTransport, or httpx's own behind a proxy

`DeliveryClient` replaces httpx's cookie jar by assigning the client's private
`_cookies`: the one use of an httpx internal, kept to this module. The public way,
`AsyncClient(cookies=a_jar_that_keeps_nothing)`, still wraps every request and
response for http.cookiejar: measured with a MockTransport answering Set-Cookie,
median of 6 alternating rounds of 2,000 requests, 124 us a request here against
176 us the public way. tests/test_transport.py fails if httpx stops reading
`_cookies` (a Set-Cookie answer would then be kept).
"""

from __future__ import annotations

import urllib.request
from typing import Any

import httpx

from streamctl.delivery.transport import LeanTransport


def default_client() -> httpx.AsyncClient:
    """Pooled keep-alive connections, shared by every lane: on LeanTransport (under a
    third of httpcore's CPU per request), limits per origin; on httpx's own transport
    when the environment names a proxy, since LeanTransport does not speak to proxies."""
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=128)
    proxies = urllib.request.getproxies_environment()  # HTTP(S)_PROXY, ALL_PROXY, any case
    if proxies.keys() & {"http", "https", "all"}:
        return DeliveryClient(limits=limits, timeout=30.0)
    return DeliveryClient(transport=LeanTransport(limits=limits), timeout=30.0)


class DeliveryClient(httpx.AsyncClient):
    """httpx's client, minus a cookie jar and a reference cycle per response.

    httpx binds every response's stream to the response itself, a cycle that keeps
    the response, its request and the request's body (a 100-event batch: ~27 KB) alive
    until a full garbage collection: replaying 1,000,000 events, the process grew by
    about 170 MB. A response read whole has no use for that stream: it is replaced.

    Deliveries keep no cookies: what one API response sets is never sent with later
    requests, to that API or any other (Segment's destinations, on fetch, keep none
    either). Reading every response's Set-Cookie through http.cookiejar cost about a
    quarter of the CPU of a request."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cookies = _NoCookies()

    async def send(
        self, request: httpx.Request, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        response = await super().send(request, stream=stream, **kwargs)
        if not stream:
            response.stream = httpx.ByteStream(response.content)
        return response


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing (`DeliveryClient`)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None
