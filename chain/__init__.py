"""castnet chain layer (see DESIGN.md)."""
