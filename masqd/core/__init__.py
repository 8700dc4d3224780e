"""The pure core: the config file's meaning, the rules it renders to, the domain's words.

No I/O, no threads, no third-party code but the YAML parser (an import contract checks it):
everything here is a function of its arguments, tested without root.
"""
