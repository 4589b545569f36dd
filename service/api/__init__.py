"""HTTP layer: schemas, routes, errors, middleware."""
