"""The proxy: listeners, routing, the pipeline and the upstream hop."""
