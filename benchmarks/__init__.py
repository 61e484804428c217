"""The benchmarks of etl_assets: load throughput and memory, sensor and UI scale (benchmarks/run.py).

A development tool, not part of the product: the wheel holds etl_assets/ only, and `etl-assets bench`
(or `make bench`) runs this package from the repository the project is installed from for development.
"""
