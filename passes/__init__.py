"""Relax -> Relax passes. Importing this package registers their pipeline stages in order."""
