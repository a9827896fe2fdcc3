"""``synod demo``: a guided tour of every block on a local embedded cluster.

Each block contributes steps in its own module here (``synod.demo.<block>``) that
define ``STEPS``: a tuple of ``Step``. The tour runs them in order, prints a short
explanation before each, and ends with a summary table of what it checked.
"""
