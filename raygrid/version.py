"""raygrid's version, importable without importing the package's searches."""
__version__ = "0.1.0"
