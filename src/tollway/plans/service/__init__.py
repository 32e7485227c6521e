"""Plans: the catalog in memory, its versions in the database, and each organization's plan.

``catalog_service`` (:mod:`.catalog`) answers catalog questions without I/O (``get_plan``,
``token_packs``, ``tax_rate``, ``dunning_schedule`` ...) from the active catalog held
in process; ``get_plan_price`` reads the price snapshot of a catalog version, so a
subscription keeps the price it started with after the catalog changes.

``plans_service`` (:mod:`.assignments`) keeps the organization → plan assignment and its
license state (``plan_of`` / ``assign_plan``; billing writes it) and per-organization overrides.
"""
