"""Renderers: frozen records in, text out. Nothing here imports torch (a test checks)."""
