"""The collector's Graphite-compatible read API (render, find, index, functions)."""

from __future__ import annotations

from collector.render.views import add_render_routes

__all__ = ["add_render_routes"]
