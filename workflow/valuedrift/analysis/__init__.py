"""Aggregate tables, drift metrics and report figures."""
