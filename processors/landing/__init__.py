"""Landing: decode, dedup, price, mark late, track sessions and store each batch exactly once."""
