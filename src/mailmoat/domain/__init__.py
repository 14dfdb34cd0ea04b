"""Pure rules of mailmoat: no I/O, importable from every layer."""
