"""How long a rotated-out signing key stays in the JWKS: the admin API enforces these, `narrowgate keys` quotes them."""

DEFAULT_OVERLAP_S = 3600.0
# The old key must verify every token it signed until that token expires: task tokens live up to
# 900 s (upstream tokens 60 s), plus clock leeway and a verifier's JWKS cache.
MIN_OVERLAP_S = 960.0
# Far enough out for any sensible window; keeps a typo from pinning a retired key in the JWKS for years.
MAX_OVERLAP_S = 30 * 24 * 3600.0
