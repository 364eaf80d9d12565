"""castnet payments layer (see DESIGN.md)."""
