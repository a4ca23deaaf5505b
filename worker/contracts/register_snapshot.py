"""RegisterSnapshot: one tenant's whole register state, on `flyt.registers.v1` (compacted).

The model checks shapes only. The rules that span fields (R6–R13) live in
`worker.core.snapshot_rules`, so that a refusal can list every problem in words an
administrator understands.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from worker.contracts.submission import DIMENSION_FIELDS
from worker.contracts.types import Code, Id, Record, SchemaVersion, Timestamp


class Source(StrEnum):
    """Where in Flyt a dimension's value comes from (R6)."""

    BETALINGSTYPE = "betalingstype"
    TILHORIGHET = "tilhorighet"
    TILTAK = "tiltak"
    BARN = "barn"
    GRUPPER = "grupper"


if TYPE_CHECKING:
    XledgerField = str  # a Literal takes no variable: to mypy, one of DIMENSION_FIELDS
else:
    # The Literal of the names (validated, and an enum in the schema), spelled once.
    XledgerField = Literal[DIMENSION_FIELDS]


class Publisher(Record):
    user_id: Id
    roles: list[str] = Field(default_factory=list)


class TenantSettings(Record):
    accounting_system: str  # R1: must be "Xledger"
    url: str  # R2
    counter_account: Code  # R3: Motkonto
    bank_account_pkey: Code | None = None  # R4: Bankkonti-pkey
    token_ref: Id  # R5: a reference to the token, never the token
    default_vat_code: Code | None = None  # R12


class Dimension(Record):
    position: int = Field(ge=1, le=20)
    name: str
    sources: list[Source] = Field(min_length=1)
    xledger_field: XledgerField
    required: bool = True


class BetalingstypeEntry(Record):
    category: Code
    value: Code


class OrgUnit(Record):
    org_unit_id: Id
    level: int = Field(ge=1, le=3)
    parent_id: Id | None = None
    name: str | None = None


class UnitValue(Record):
    org_unit_id: Id
    value: Code


class Tilhorighet(Record):
    units: list[OrgUnit] = Field(default_factory=list)
    values: list[UnitValue] = Field(default_factory=list)


class TiltakEntry(Record):
    measure_types: list[str] = Field(min_length=1)
    org_unit_ids: list[Id] = Field(min_length=1)
    value: Code


class BarnEntry(Record):
    child_id: Id
    value: Code


class GruppeEntry(Record):
    group_id: Id
    value: Code


class MvaByCategory(Record):
    category: Code
    code: Code


class Mva(Record):
    codes: list[Code] = Field(default_factory=list)
    by_category: list[MvaByCategory] = Field(default_factory=list)


class Registers(Record):
    betalingstype: list[BetalingstypeEntry] = Field(default_factory=list)
    tilhorighet: Tilhorighet = Field(default_factory=Tilhorighet)
    tiltak: list[TiltakEntry] = Field(default_factory=list)
    barn: list[BarnEntry] = Field(default_factory=list)
    grupper: list[GruppeEntry] = Field(default_factory=list)
    mva: Mva = Field(default_factory=Mva)


class RegisterSnapshot(Record):
    schema_version: SchemaVersion
    tenant_id: Id
    version: int = Field(ge=0)
    published_at: Timestamp
    published_by: Publisher
    test_tenant: bool = False
    settings: TenantSettings
    dimensions: list[Dimension] = Field(min_length=1)
    registers: Registers = Field(default_factory=Registers)
