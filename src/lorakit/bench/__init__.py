"""Weight × seed bench: render plans, per-image metrics and labelled comparison grids."""
