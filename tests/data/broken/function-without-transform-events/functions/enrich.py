def transform(events, settings):
    return events
