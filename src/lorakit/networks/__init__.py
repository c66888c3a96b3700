"""Adapters (built on peft) and their file formats."""
