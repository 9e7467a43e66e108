"""The bus between ingest nodes and workers when they are many machines (`run --bus`,
`streamctl worker`): Kafka (streamctl.bus.kafka). See docs/scale-out.md."""
