"""The destination catalog: every destination type streamctl can deliver to."""

from __future__ import annotations

from streamctl.core.errors import ConfigError, Problem
from streamctl.core.model import DestinationConfig
from streamctl.destinations.amplitude import AmplitudeDestination
from streamctl.destinations.base import CatalogEntry, Destination
from streamctl.destinations.braze import BrazeDestination
from streamctl.destinations.console import ConsoleDestination
from streamctl.destinations.customerio import CustomerIODestination
from streamctl.destinations.duckdb import DuckDBDestination
from streamctl.destinations.file import FileDestination
from streamctl.destinations.ga4 import GA4Destination
from streamctl.destinations.hubspot import HubSpotDestination
from streamctl.destinations.intercom import IntercomDestination
from streamctl.destinations.iterable import IterableDestination
from streamctl.destinations.kafka import KafkaDestination
from streamctl.destinations.linkedin import LinkedInDestination
from streamctl.destinations.meta import MetaDestination
from streamctl.destinations.mixpanel import MixpanelDestination
from streamctl.destinations.parquet import ParquetDestination
from streamctl.destinations.pinterest import PinterestDestination
from streamctl.destinations.postgres import PostgresDestination
from streamctl.destinations.reddit import RedditDestination
from streamctl.destinations.segment import SegmentDestination
from streamctl.destinations.slack import SlackDestination
from streamctl.destinations.snapchat import SnapchatDestination
from streamctl.destinations.tiktok import TikTokDestination
from streamctl.destinations.webhook import WebhookDestination


def _by_type(*destinations: type[Destination]) -> dict[str, type[Destination]]:
    """The catalog, keyed by each destination's own `catalog.type`."""
    return {destination.catalog.type: destination for destination in destinations}


# A new destination: its module, its import above, and one line here.
CATALOG: dict[str, type[Destination]] = _by_type(
    AmplitudeDestination,
    BrazeDestination,
    ConsoleDestination,
    CustomerIODestination,
    DuckDBDestination,
    FileDestination,
    GA4Destination,
    HubSpotDestination,
    IntercomDestination,
    IterableDestination,
    KafkaDestination,
    LinkedInDestination,
    MetaDestination,
    MixpanelDestination,
    ParquetDestination,
    PinterestDestination,
    PostgresDestination,
    RedditDestination,
    SegmentDestination,
    SlackDestination,
    SnapchatDestination,
    TikTokDestination,
    WebhookDestination,
)


def catalog_entry(type_name: str) -> CatalogEntry:
    return CATALOG[type_name].catalog


def create(config: DestinationConfig) -> Destination:
    """The runtime destination for a `destinations:` entry.

    Raises ConfigError when a config value is not one of its field's `choices`: a region
    typo must stop the run, not send data to another region's host."""
    entry = CATALOG[config.type].catalog
    problems = [
        Problem(
            config.location.path,
            config.location.line,
            config.location.column,
            f"destination {config.name!r}: config key {spec.name!r} is {config.config[spec.name]!r};"
            f" it takes one of {', '.join(spec.choices)}",
        )
        for spec in entry.config
        if spec.choices and config.config.get(spec.name) not in (None, "", *spec.choices)
    ]
    if problems:
        raise ConfigError(problems)
    return CATALOG[config.type](config.name, config.config)
