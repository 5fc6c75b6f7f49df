"""Read-only questions over the store: the sql command's engine and the fleet summary."""
