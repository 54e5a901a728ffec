"""The WebSocket source: the injector that is the exchange feed, its server, TLS, routing, and the feed dialects."""
