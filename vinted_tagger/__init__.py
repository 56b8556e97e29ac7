"""The bottom layer every step imports: atomic file writes, settings, the user-error base and the version.

It imports nothing of the product (layers, checked by import-linter: service > classifiers > embed > vinted_tagger).
"""

from importlib import metadata

try:
    __version__ = metadata.version("vinted-tagger")  # single source: pyproject.toml's `version`
except metadata.PackageNotFoundError:  # a checkout that was never installed
    __version__ = "0+unknown"
