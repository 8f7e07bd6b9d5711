"""Bearer-token authentication shared by DRF views and Channels consumers."""

from core.auth.principal import Principal
from core.auth.service import authenticate_authorization, get_token_verifier, require_scope

__all__ = ["Principal", "authenticate_authorization", "get_token_verifier", "require_scope"]
