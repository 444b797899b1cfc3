"""Several workers and replicas as one gateway: the shared implementations of the state seams on Redis
(gateway/state/ names the seams), the event bus between replicas, and the connection they share.

Stages never import this package; gateway/app.py picks these implementations when `cluster.redis_url`
is set (docs/state.md, docs/operations.md).
"""
