"""The published JSON Schemas of the wire records (`make schemas` writes them to schemas/)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from worker.contracts import (
    DlqHeaders,
    PaymentStatusEvent,
    Receipt,
    RegisterSnapshot,
    Rejection,
    Submission,
    TenantPause,
)

RECORDS: dict[str, type[BaseModel]] = {
    "payment-status-event": PaymentStatusEvent,
    "register-snapshot": RegisterSnapshot,
    "submission": Submission,
    "receipt": Receipt,
    "rejection": Rejection,
    "dlq-headers": DlqHeaders,
    "tenant-pause": TenantPause,
}


def render() -> dict[str, str]:
    """File name → schema text, exactly as written to disk."""
    out = {}
    for name, model in RECORDS.items():
        schema = model.model_json_schema(mode="validation", by_alias=True)
        schema["$id"] = f"https://flyt-xledger-worker/schemas/{name}.schema.json"
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    return out


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write(Path(__file__).resolve().parent.parent / "schemas"):
        print(p)
