"""Operator tools (kafka-python, assigned consumers: no group join)."""
