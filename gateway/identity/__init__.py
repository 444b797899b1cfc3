"""Who is calling: bearer tokens become a Principal, or the request is refused with 401."""

from gateway.identity.principal import Principal
from gateway.identity.static_tokens import Authenticator

__all__ = ["Authenticator", "Principal"]
