"""Event collection: HTTP routes, pixel, normalisation, the durable buffer and the flusher."""
