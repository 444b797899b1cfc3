"""Measured privilege: analysis beside the call path (reach, blast radius, right-sizing, replay, evidence).

It may import the stages; nothing in the call path imports it. The admin API, the console, the wiring
and the CLI (through the admin API) use it.
"""
