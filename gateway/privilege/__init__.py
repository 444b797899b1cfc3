"""Measuring privilege, beside the call path: reach, blast radius, right-sizing, replay, evidence.

May import the stages (policy, catalog, registry, tasks, store, audit, settings); nothing in the call
path (calls/, transport/, the stages) imports it. admin/, console/, wiring/ and cli/ use it.
"""
