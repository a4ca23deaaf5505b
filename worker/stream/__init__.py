"""The streaming adapter: Kafka topics, the register cache, the enrich and post stages."""
