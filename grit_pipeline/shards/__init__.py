"""Shard tooling behind `grit inspect | validate | show | head | convert`, over our shards and GRIT-20M files."""
