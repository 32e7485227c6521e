"""The marketplace's rules, one module and one singleton per aggregate.

- :mod:`.listing` (``listing_service``): packages - create, edit, delete, look up, and the
  listing (search document, quality score, latest version) every change recomputes.
- :mod:`.versions` (``version_service``): signed versions and their lifecycle.
- :mod:`.discovery` (``discovery_service``): search and dependency resolution.
- :mod:`.sales` (``sales_service``): purchases, refunds and the authors' earnings, and
  ``marketplace_payments``, the listener payments calls.
- :mod:`.downloads` (``download_service``): who may download a version.


Packages belong to an author organization. A version is uploaded as a draft with
its artifact (stored content-addressed, SHA-256 recorded, signed with the platform's
Ed25519 key), then published, deprecated and yanked; rows are never deleted, so a
name@version is never given out twice. Every lifecycle change recomputes the
package's listing (a package is in search while it has a published version), its
quality score and its search document, in the same transaction.

Acquiring a package (``purchase``) counts against the plan's ``templates`` limit
through the entitlements decision. A free package is granted at once; a paid one
creates a payment (a charge of the default card, else a checkout page) and is
granted only when payments tells :class:`.sales.MarketplacePayments` that the payment
succeeded - the webhook path - which also books the author's earning and the
platform's commission.

Refunds (an operator's ``refund_order``, or one made at the provider and reported by
``charge.refunded``) reach :meth:`.sales.SalesService.payment_refunded` once per
increase of the payment's refunded total: the earning is reversed in proportion
(:func:`.sales.reversal_shares`) and a full refund revokes the buyer's entitlement.
"""
