"""Shipped model weights and cards (``<name>/model.pt``, ``model_card.json``, ``README.md``): data, no code.

Read by :mod:`fh_screen.models.predictor` (the registry of shipped models); imports nothing.
"""
