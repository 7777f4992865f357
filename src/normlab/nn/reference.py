"""Slow, obvious float64 norms (placeholder; filled in next)."""
