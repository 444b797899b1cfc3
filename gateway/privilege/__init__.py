"""Least privilege you can measure: analysis beside the call path (right-sizing, blast radius, what-if replay,
evidence). It may import the stages; nothing in the call path imports it (tests/test_import_graph.py)."""
