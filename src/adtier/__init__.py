"""adtier: first-party audience and measurement server for an ad-supported streaming tier."""
__version__ = "0.1.0"
