"""``python -m synod`` is the ``synod`` command."""

from synod.cli import main

main()
