"""Stream processors: decode, validate and land trace events; compute metrics."""
