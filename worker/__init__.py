"""Flyt → Xledger worker: posts paid (Betalt) child-welfare payments to the ledger."""

__version__ = "0.1.0"
