"""Helpers that several packages share: distributed communication, atomic file writes,
figures, markdown tables and numerical precision. This package imports no other package of
`detection`, so every package may import it."""
