"""lit_vision."""
