"""Where received data lives: filing, header reading, ingest, drop folder, retention, locks, journal."""
