"""The ASGI app served by `outbox serve`."""
