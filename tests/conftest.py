"""Shared pytest configuration: the cluster fixtures are available to every test package."""

pytest_plugins = ["tests.cluster.fixtures"]
