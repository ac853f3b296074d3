"""Runnable snippets of chapter 2: `python -m docs.guide.snippets.NAME`."""
