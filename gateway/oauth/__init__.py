"""The gateway as an OAuth authorization server: the token endpoint and RFC 8414 metadata."""
