"""daskcal."""
