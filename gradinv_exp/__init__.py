"""gradinv_exp: reproducible gradient-inversion experiments against gradient defenses."""
