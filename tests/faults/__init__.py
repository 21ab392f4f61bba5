"""Fault scenarios: the engine under killed workers, a lost broker and a restarted database, on servers of their own."""
