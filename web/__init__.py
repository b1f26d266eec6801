"""The ASGI app served by `outbox serve`: payment webhooks and signed downloads.

Depends on `domain`, `outbox` and `consumers`; the composition root (`pipeline`) builds it
from the settings.
"""

from web.app import MAX_BODY_BYTES, WebConfig, create_app
from web.downloads import DownloadSigner, KeyRing, SigningKey
from web.errors import WebError
from web.signatures import TOLERANCE_S, StandardWebhooks, StripeSignature, make_scheme
from web.unsubscribe import UnsubscribeSigner

__all__ = [
    "MAX_BODY_BYTES",
    "TOLERANCE_S",
    "DownloadSigner",
    "KeyRing",
    "SigningKey",
    "StandardWebhooks",
    "StripeSignature",
    "UnsubscribeSigner",
    "WebConfig",
    "WebError",
    "create_app",
    "make_scheme",
]
