"""Tools for development and tests, never imported by production code (import-linter):
the embedded broker (Tansu), the Apache Kafka launcher, child-process helpers, feeds of
demo records, and the Xledger sandbox."""
