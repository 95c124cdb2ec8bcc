"""HTTP service: protocol (routes, schemas) over one engine (queue, batching, device)."""
