"""Images: the content-addressed store, base images, imports, and (later) the Dockerfile builder."""
