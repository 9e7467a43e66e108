"""The destination catalog: every destination type streamctl can deliver to."""

from __future__ import annotations

from streamctl.config.model import DestinationConfig
from streamctl.destinations.base import CatalogEntry, Destination
from streamctl.errors import ConfigError, Problem

CATALOG: dict[str, type[Destination]] = {}
# Registration lines: one per destination module.
from streamctl.destinations.console import ConsoleDestination  # noqa: E402
from streamctl.destinations.file import FileDestination  # noqa: E402
from streamctl.destinations.webhook import WebhookDestination  # noqa: E402

CATALOG["webhook"] = WebhookDestination
CATALOG["file"] = FileDestination
CATALOG["console"] = ConsoleDestination

from streamctl.destinations.ga4 import GA4Destination  # noqa: E402

CATALOG["ga4"] = GA4Destination

from streamctl.destinations.segment import SegmentDestination  # noqa: E402

CATALOG["segment"] = SegmentDestination

from streamctl.destinations.iterable import IterableDestination  # noqa: E402

CATALOG["iterable"] = IterableDestination

from streamctl.destinations.customerio import CustomerIODestination  # noqa: E402

CATALOG["customerio"] = CustomerIODestination

from streamctl.destinations.amplitude import AmplitudeDestination  # noqa: E402
from streamctl.destinations.braze import BrazeDestination  # noqa: E402
from streamctl.destinations.mixpanel import MixpanelDestination  # noqa: E402
from streamctl.destinations.slack import SlackDestination  # noqa: E402

CATALOG["slack"] = SlackDestination
CATALOG["amplitude"] = AmplitudeDestination
CATALOG["mixpanel"] = MixpanelDestination
CATALOG["braze"] = BrazeDestination

from streamctl.destinations.kafka import KafkaDestination  # noqa: E402

CATALOG["kafka"] = KafkaDestination

from streamctl.destinations.hubspot import HubSpotDestination  # noqa: E402

CATALOG["hubspot"] = HubSpotDestination

from streamctl.destinations.intercom import IntercomDestination  # noqa: E402

CATALOG["intercom"] = IntercomDestination

from streamctl.destinations.linkedin import LinkedInDestination  # noqa: E402

CATALOG["linkedin"] = LinkedInDestination


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
