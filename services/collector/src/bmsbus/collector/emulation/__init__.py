"""Emulators: sans-I/O fake BMSes that speak byte-exact protocol (see base.py)."""
