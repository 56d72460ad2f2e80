"""Test support shared by several test packages (tiny models, adapters, cluster helpers)."""
