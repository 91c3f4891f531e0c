"""``python -m raygrid.cli``: the ``raygrid`` command."""
from raygrid.cli.main import main

main()
