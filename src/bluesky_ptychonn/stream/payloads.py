"""Typed payloads of the wire's messages (placeholder, filled below)."""

UNCERTAINTY_KEY = "phase_uncertainty"
