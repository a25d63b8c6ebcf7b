"""knox's own token authentication again, instead of shop/token_auth.py's: per request the
tokens of the key's prefix, then the token's user, then every token of that user (to delete
the expired ones), three statements where the shop's one join does ("The apps' statements
written once" in docs/benchmarks.md). For an A/B run of the HTTP figures:
``make bench ARGS="--only saga --ab bench.experiments.knox_token_auth"``.
"""

from shop.settings import *  # noqa: F403
from shop.settings import REST_FRAMEWORK

REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "knox.auth.TokenAuthentication",
        *REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"][1:],
    ],
}
