"""The wire records of ../shared/contracts.md, as pydantic v2 models.

These are plain data: no I/O. Field names follow the contract and are never renamed.
"""

from worker.contracts.dlq import DlqHeaders, DlqReason
from worker.contracts.payment_event import Child, Measure, Payment, PaymentStatusEvent, Status
from worker.contracts.receipt import Receipt, ReceiptLine
from worker.contracts.register_snapshot import (
    Dimension,
    Publisher,
    Registers,
    RegisterSnapshot,
    Source,
    TenantSettings,
)
from worker.contracts.rejection import Problem, ProblemCode, Rejection
from worker.contracts.submission import (
    CarriedEvent,
    GLLine,
    Submission,
    SubmissionFields,
    SubmissionToPost,
)
from worker.contracts.tenant_control import TenantPause

__all__ = [
    "CarriedEvent",
    "Child",
    "Dimension",
    "DlqHeaders",
    "DlqReason",
    "GLLine",
    "Measure",
    "Payment",
    "PaymentStatusEvent",
    "Problem",
    "ProblemCode",
    "Publisher",
    "Receipt",
    "ReceiptLine",
    "RegisterSnapshot",
    "Registers",
    "Rejection",
    "Source",
    "Status",
    "Submission",
    "SubmissionFields",
    "SubmissionToPost",
    "TenantPause",
    "TenantSettings",
]
