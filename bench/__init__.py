"""The benchmarks (`python bench/NAME.py`); `_common` holds what they share."""
