"""Command-line programs (thin wrappers over the library): run them as `python tools/<name>.py`."""
