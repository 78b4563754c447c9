"""The command line: the table of modes, the flags, YAML files and which source of a value wins."""
