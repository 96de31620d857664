"""The base layer every group builds on: option registries and their one-line checks
(``options.py``) and torch imported on first use (``lazy.py``). It imports nothing else
of the package."""
