"""Base models: the miniature world's tiny model built here, or a hub model by id or path."""
