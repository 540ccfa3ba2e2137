"""Testing support: a real embedded rainbow server for your own tests (pytest plugin)."""
