"""Credits: a double-entry ledger of grants, holds (reserve -> commit/release) and expiry."""
