"""Where composer keeps things on disk: the layout under one root, volumes."""
