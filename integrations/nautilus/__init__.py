"""NautilusTrader integration (the ``nautilus`` extra)."""
