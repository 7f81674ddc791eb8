"""Benchmark runners: each returns plain data (JSON-serialisable) plus a Markdown formatter."""
