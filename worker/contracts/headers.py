"""Record header names, defined once (the wire contract: contracts.md, and the worker's own).

`DlqHeaders` (dlq.py) takes its field aliases from the `dlq.*` names here, so a reader of
one header (the operator tools, the demo) names it as the model does.
"""

from __future__ import annotations

# Set (to the actor) on a Betalt event re-published by `rejections resend` (R13): the
# payment is evaluated again although it was handled before. Carried to the submission
# made from it: the post stage sends it although the payment was dead-lettered before.
RESEND_BY = "flyt.resend_by"

# On a submission: where the Betalt event it was made from sits, `topic/partition@offset`.
# The payment's state lives with the holder of that partition: a refusal by Xledger is
# sent back there (engine.md, "Ownership").
SOURCE = "flyt.source"

# On a submission: the payment's first evaluation (the enrich stage had never handled it,
# and it is not a resend). It is looked up before posting like every other (R14, decided
# 12-06); it only lets a code Xledger refused lately refuse it without a mutation, once the
# lookup has found it absent (a re-evaluation or a resend is always sent: someone may have
# fixed the code in Xledger).
FIRST_EVALUATION = "flyt.first_evaluation"

# On a submission: the enrich stage made it while working off a backlog (many records of
# its partition still to do): more of the tenant's payments are on their way, so the post
# stage may gather a larger batch (issue 20: fewer requests in a burst).
BACKLOG = "flyt.backlog"

# A dead letter's headers (contracts.md): why, where it came from, when it failed.
DLQ_PREFIX = "dlq."
DLQ_REASON = "dlq.reason"
DLQ_ERROR_CLASS = "dlq.error_class"
DLQ_ERROR_MESSAGE = "dlq.error_message"
DLQ_STAGE = "dlq.stage"
DLQ_ORIGINAL_TOPIC = "dlq.original_topic"
DLQ_ORIGINAL_PARTITION = "dlq.original_partition"
DLQ_ORIGINAL_OFFSET = "dlq.original_offset"
DLQ_ATTEMPTS = "dlq.attempts"
DLQ_FIRST_FAILED_AT = "dlq.first_failed_at"
DLQ_LAST_FAILED_AT = "dlq.last_failed_at"

# Set by `dlq replay` on the record it sends back to its original topic.
REPLAY_COUNT = "dlq.replay_count"
REPLAYED_BY = "dlq.replayed_by"
REPLAY_HEADERS = (REPLAY_COUNT, REPLAYED_BY)
