"""Benchmarks (loaders, prompts), graders that score model answers, and importers of public routing tables."""
