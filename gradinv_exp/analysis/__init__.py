"""Reading results: per-image metrics, tables over many runs, figures, privacy vs utility."""
