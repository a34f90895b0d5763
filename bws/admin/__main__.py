"""``python -m bws.admin``: the same as the ``bws-admin`` command."""

from bws.admin.cli import main

main()
