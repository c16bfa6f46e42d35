"""chatrelay."""
