"""Preprocessing (with its inverse), datasets and cache, phantoms, real sample volumes."""
