"""The marketplace's demo loader (filled in below)."""
