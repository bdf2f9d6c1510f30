"""tidemark: shared foundation (CLI entry point, configuration, logging, daemon lifecycle)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
