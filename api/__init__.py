"""Pure, shared model of the KAITO Workspace: types, conditions, catalogs and sizing.

Nothing here performs I/O beyond reading the package's own data files, and nothing
imports kubernetes, aiohttp or torch (enforced by import-linter).
"""
