"""Authenticators that need optional dependencies, one submodule each.

The interface lives in the core: `chatrelay.Authenticator`,
`chatrelay.Credentials` and `chatrelay.Identity`, with
`chatrelay.DevelopmentAuthenticator` for development. This package holds the
implementations that bring a dependency along, so that ``import chatrelay`` never
imports them:

- `chatrelay.auth.jwt`: JSON Web Tokens, with the ``jwt`` extra
  (``pip install 'chatrelay[jwt]'``).
"""

__all__: list[str] = []
