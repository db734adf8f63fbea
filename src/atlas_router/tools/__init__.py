"""Tools of the pool: python-code, calculator, web-search, prm, none, and the multi-modal tools."""
