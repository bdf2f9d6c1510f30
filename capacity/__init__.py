"""The capacity engine and the batch jobs around the models (network and file I/O live here)."""
