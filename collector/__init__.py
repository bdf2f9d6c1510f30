"""The collector: a Graphite-compatible metrics daemon (ingest, durable storage, render API)."""
