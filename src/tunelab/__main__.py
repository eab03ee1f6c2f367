"""``python -m tunelab``: the ``tunelab`` command."""

from tunelab._pending import main

main()
