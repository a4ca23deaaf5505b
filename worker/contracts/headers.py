"""Record header names, defined once (the wire contract: contracts.md, and the worker's own).

The `dlq.*` headers of a dead letter are the aliases of `DlqHeaders` (dlq.py); these are
the others, and the replay headers the operator tools set.
"""

from __future__ import annotations

# Set (to the actor) on a Betalt event re-published by `rejections resend` (R13): the
# payment is evaluated again although it was handled before.
RESEND_BY = "flyt.resend_by"

# On a submission: where the Betalt event it was made from sits, `topic/partition@offset`.
# The payment's state lives with the holder of that partition: a refusal by Xledger is
# sent back there (engine.md, "Ownership").
SOURCE = "flyt.source"

# On a submission: the payment's first (the enrich stage had never handled it, and it is
# not a resend): unless the post stage finds that it began to post it before, nobody has,
# and its first mutation needs no lookup.
FRESH = "flyt.fresh"

# Set by `dlq replay` on the record it sends back to its original topic.
REPLAY_COUNT = "dlq.replay_count"
REPLAYED_BY = "dlq.replayed_by"
REPLAY_HEADERS = (REPLAY_COUNT, REPLAYED_BY)
