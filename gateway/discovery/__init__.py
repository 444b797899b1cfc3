"""Tools that upstreams add or change while running: quarantine, definition pins and review.

model: one tool's review record; service: reconcile what upstreams list with what was reviewed
(giving the effective catalog), and the reviewer's approve / reject.
"""
