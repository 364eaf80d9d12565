"""castnet media layer (see DESIGN.md)."""
