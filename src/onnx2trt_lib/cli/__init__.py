"""Command-line interface; the library never imports this package."""
