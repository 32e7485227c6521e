"""Imports every domain's tables so that ``metadata`` knows the whole schema.

Alembic autogenerate and the test suite read :data:`metadata` from here; a new
domain adds its ``models`` module to the list.
"""

from __future__ import annotations

from tollway.accounts import models as accounts_models
from tollway.api_keys import models as api_keys_models
from tollway.audit import models as audit_models
from tollway.auth import models as auth_models
from tollway.billing import models as billing_models
from tollway.kit import idempotency, outbox
from tollway.kit.models import Base
from tollway.ledger import models as ledger_models
from tollway.marketplace import models as marketplace_models
from tollway.metering import models as metering_models
from tollway.payments import models as payments_models
from tollway.plans import models as plans_models
from tollway.testclock import models as testclock_models

metadata = Base.metadata

__all__ = [
    "accounts_models",
    "api_keys_models",
    "audit_models",
    "auth_models",
    "billing_models",
    "idempotency",
    "ledger_models",
    "marketplace_models",
    "metadata",
    "metering_models",
    "outbox",
    "payments_models",
    "plans_models",
    "testclock_models",
]
