"""Fast tests of the pure modules, laid out like the source (tests/unit/core/x.py tests
flowviz/core/x.py): no processes, no database, no network."""
