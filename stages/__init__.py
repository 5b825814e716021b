"""Pipeline stages (one module each, ``python -m stages.<name> --help``) and the shared modules they use."""
