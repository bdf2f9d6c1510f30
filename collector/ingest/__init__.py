"""Ingest: protocol parsers (pure), validation, and the asyncio listeners that feed the store."""
