"""The FiftyOne plugin entry (``py_entry`` in ``fiftyone.yml``).

FiftyOne loads this file under a synthetic module name, so it imports the package
absolutely and keeps no state of its own.

A plugin installed with ``fiftyone plugins download`` is a folder holding the whole
repository, with no ``pip install``: there ``fiftyone_prune`` is importable only once
Python is told where it is. When the package is importable already (``pip install
fiftyone-prune``, or an editable checkout), that copy wins and nothing is added: one
process holds one ``fiftyone_prune``, and a copy pip installed is the one whose
dependencies pip resolved and the one the user's own SDK calls import. Checking first,
rather than always preferring the folder, also keeps the result independent of whether
the user imported ``fiftyone_prune`` before FiftyOne loaded its plugins.

Otherwise a finder for exactly the package ``fiftyone_prune`` in the folder is appended
to ``sys.meta_path``. The folder itself never goes on ``sys.path``: its other top-level
directories (``tests``, ``benchmarks``, ``scripts``) would then be what ``import tests``
finds in the user's own code. Processes started by fork (torch's image-loading workers
on Linux) inherit the finder, and ``fiftyone delegated launch`` loads the plugin in each
process it starts; image-loading workers started by spawn (macOS, Windows) need the
package installed with pip.
"""

import importlib.machinery
import importlib.util
import logging
import os
import sys

logger = logging.getLogger(__name__)

#: the downloaded plugin folder: this file is ``<folder>/fiftyone_prune/plugin/__init__.py``
PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = "fiftyone_prune"


class BundledPackageFinder:
    """Finds the package ``fiftyone_prune`` (and only it) in the plugin folder; its
    submodules are then found through the package's own ``__path__``."""

    def __init__(self, folder: str):
        self.folder = folder

    def find_spec(self, name, path=None, target=None):
        if name != PACKAGE:
            return None
        return importlib.machinery.PathFinder.find_spec(name, [self.folder])


def _make_package_importable():
    # once added, the finder makes the package importable: reloads add no second one
    if importlib.util.find_spec(PACKAGE) is None:
        sys.meta_path.append(BundledPackageFinder(PLUGIN_DIR))


def _warn_if_another_version_is_used():
    """An older pip-installed copy may lack operators the folder's manifest lists; FiftyOne
    would then skip them without a word."""
    import fiftyone_prune

    manifest = os.path.join(PLUGIN_DIR, "fiftyone.yml")
    used = os.path.dirname(os.path.realpath(fiftyone_prune.__file__))
    bundled = os.path.realpath(os.path.join(PLUGIN_DIR, "fiftyone_prune"))
    if used == bundled or not os.path.isfile(manifest):
        return
    import yaml

    with open(manifest) as f:
        folder_version = str(yaml.safe_load(f).get("version"))
    if folder_version != fiftyone_prune.__version__:
        logger.warning(
            "fiftyone-prune %s installed at %s is used; the plugin folder %s holds %s. "
            "Upgrade or uninstall the installed package so that both agree.",
            fiftyone_prune.__version__, used, PLUGIN_DIR, folder_version)


def register(p):
    _make_package_importable()
    _warn_if_another_version_is_used()
    from fiftyone_prune.plugin.operators import OPERATORS
    from fiftyone_prune.plugin.panels import PANELS

    from fiftyone_prune.plugin.shards import OPERATORS as SHARD_OPERATORS

    for cls in OPERATORS + SHARD_OPERATORS + PANELS:
        p.register(cls)
