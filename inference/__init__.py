"""castnet inference layer (see DESIGN.md)."""
