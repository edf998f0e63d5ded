"""tripletlab benchmarks: pytest-benchmark cases, run apart from tests/ (`make bench`)."""
