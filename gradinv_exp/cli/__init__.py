"""The command line's own parts beside ``__main__``: ``gradinv-exp --help GROUP``
(``group_help.py``)."""
