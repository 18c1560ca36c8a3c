"""The bundled demo: phantoms, the built-in receiver, SEG checks, overlay picture, latency report."""
