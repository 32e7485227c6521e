"""The credit ledger's rules; other domains call these functions.

Double entry: every movement is a transfer whose entries sum to zero (checked before
anything is written). Per organization there is one account of each kind
(:class:`~tollway.ledger.models.AccountKind`):

==========  ===========================================================
grant       issuance (or purchases) -> wallet
reserve     wallet -> holds
commit      holds -> spending (the committed part) + holds -> wallet (the rest)
release     holds -> wallet
expire      wallet -> expiry (a lot's unspent credits at its expiry)
reverse     wallet -> refunds (a refunded purchase's unspent credits)
==========  ===========================================================

Credits held from a lot that expired or was reversed meanwhile go, when the hold ends
uncommitted, to expiry or refunds instead of back to the wallet.

``available`` = unspent credits of live lots; ``reserved`` = credits held;
``balance`` = available + reserved = granted - spent - expired - reversed.

Concurrency: every write takes the organization's wallet row lock first
(:func:`repository.lock_accounts`; on SQLite write transactions are serialised by the
database's writer lock), then checks and changes. ``available`` therefore never goes
below zero however many reserves run at once.

Lock order, one for every path that touches an organization's credits (PostgreSQL row
locks; breaking it deadlocks, which PostgreSQL resolves after a second by failing one
transaction):

1. the organization's wallet account row (``credit_accounts``, kind ``wallet``);
2. its abuse state row of the subject (``credit_abuse_states``);
3. its usage counter rows (``usage_counters``, the metering of an authorize decision);
4. grants and reservations, changed only while the wallet is held.

Reserve, commit, release, the hold and grant expiry sweeps, grants and the abuse
battery all start at 1: :func:`repository.get_abuse_state` locks the wallet before the
abuse row whoever calls it, so ``POST /api/v1/authorize`` with credits (abuse battery,
then quota, then the hold) takes wallet -> abuse -> counter and a release or an expiry
takes wallet -> abuse, never the other way round. Organizations never wait for each
other's rows. Services only flush; the caller's edge
commits (and flushes what is pending: the hot paths leave it to that single flush).
Every transfer writes an audit entry in the same transaction.
"""
