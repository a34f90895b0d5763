"""``bws-admin``: the operator's tool for a running deployment (docs/operating.md).

It reads the same environment variables as the processes (bws/settings.py), so inside a pod
(``kubectl exec``) or the admin Job it acts on that deployment: ``app`` makes and rotates
client credentials, ``classes`` lists and deletes templates through the enrollment service,
``backup`` exports and imports templates as one encrypted archive, ``keys`` rotates the
template key online, ``audit`` queries the audit trail, ``doctor`` checks it all end to end.

One module per command group; ``cli.py`` is the command line (click) and only shapes output.
"""
