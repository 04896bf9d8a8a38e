"""The HTTP side (--http-listen): server.py assembles the routes; see its docstring."""
