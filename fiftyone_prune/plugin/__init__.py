"""The FiftyOne plugin entry (``py_entry`` in ``fiftyone.yml``).

FiftyOne loads this file under a synthetic module name, so it imports the installed
package absolutely and keeps no state of its own.
"""


def register(p):
    from fiftyone_prune.plugin.operators import OPERATORS
    from fiftyone_prune.plugin.panels import PANELS

    for cls in OPERATORS + PANELS:
        p.register(cls)
