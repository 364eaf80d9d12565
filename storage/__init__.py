"""castnet storage layer (see DESIGN.md)."""
