"""Benchmarks run by `make bench` (`python -m benchmarks`); see `benchmarks.__main__`.

Development only, like tests/: not installed with the package nor copied into the image.
"""
