"""Weir."""
