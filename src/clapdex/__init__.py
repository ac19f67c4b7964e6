"""clapdex: search and audit audio collections through named sound concepts.

    import clapdex
    with clapdex.open_index("~/sounds-index") as index:
        for hit in index.search(text="glass breaking", k=5):
            print(hit)
"""

__version__ = "0.1.0"
__all__ = ["open_index", "__version__"]


def __getattr__(name):
    # Imported on first use so that `import clapdex` (and the CLI's --help) stays fast.
    if name == "open_index":
        from clapdex.api import open_index

        return open_index
    raise AttributeError(name)
