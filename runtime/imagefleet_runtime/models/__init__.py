"""Model loading: the built-in random-weight pipelines and real ones through diffusers."""
