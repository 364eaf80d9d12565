"""castnet node layer (see DESIGN.md)."""
