"""The ``raygrid`` command (``main``) and what it runs: ``spec`` (a YAML search spec, checked),
``api`` (``run_spec``, ``save_search``) and ``status`` (a store's progress).

The entry point is :func:`raygrid.cli.main.main`; this package imports nothing on its own so that
``import raygrid`` stays light."""
