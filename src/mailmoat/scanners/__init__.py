"""Spam scanners behind one ``Scanner`` protocol."""
