"""The billing engine: one module and one service per aggregate.

Lifecycle (:mod:`.lifecycle`). Every organization starts on the catalog's free plan. A
paid plan starts with the plan's trial (once per organization) or with a first invoice
(:mod:`.subscriptions`). At each period end the ``billing.renew`` sweep closes the period
(:mod:`.renewals`): it applies a scheduled downgrade or cancellation, or invoices the
next period in advance (base fee) plus the ending period's overage in arrears, and
collects it off-session (:mod:`.collection`). Upgrades take effect at once with a
proration invoice (:mod:`.invoices`); downgrades wait for the period end.

Dunning. A failed collection makes the subscription ``past_due`` and the license
``grace`` (:mod:`.license`: features whose policy is ``immediate`` go off, open credit
holds are released); retries follow the catalog's schedule (2, 5, 7, 7 days between
attempts); when grace ends the license is ``restricted`` (``after_grace`` features off
too); after the last failed retry the subscription is ``unpaid`` or ``canceled`` as the
catalog says. Paying the open invoices restores ``active`` at any point.

Every state change is *set* from facts (a payment's attempt number, the clock), so
repeated or reordered events and sweeps converge to the same state, and every
transition publishes an outbox event.

The modules import each other in one direction only: base <- license, allotments,
orders <- lifecycle <- collection <- invoices <- packs, subscriptions, renewals.
"""
