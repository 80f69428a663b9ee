"""The manifest and the registered operators agree, checked in a fresh process (FiftyOne
only logs registration errors, so nothing else would catch them)."""

import json
import os
import subprocess
import sys

import yaml

from tests.conftest import REPO_ROOT


def manifest():
    with open(os.path.join(REPO_ROOT, "fiftyone.yml")) as f:
        return yaml.safe_load(f)


def test_every_manifest_operator_and_panel_is_registered():
    m = manifest()
    assert m["name"] == "@fiftyone-prune/prune"
    assert os.path.isfile(os.path.join(REPO_ROOT, m["py_entry"]))
    code = (
        "import json, fiftyone.operators as foo;"
        "print(json.dumps([o.uri for o in foo.list_operators(enabled='all')]))"
    )
    env = dict(os.environ, FIFTYONE_PLUGINS_DIR=REPO_ROOT)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    registered = set(json.loads(out.stdout.strip().splitlines()[-1]))
    expected = {f"{m['name']}/{name}" for name in m.get("operators", []) + m.get("panels", [])}
    assert expected, "the manifest lists no operators"
    assert expected <= registered, f"not registered: {expected - registered}\n{out.stderr}"
    ours = {u for u in registered if u.startswith(m["name"] + "/")}
    assert ours == expected, f"registered but not in fiftyone.yml: {ours - expected}"


def test_registered_operators_match_the_package_list():
    from fiftyone_prune.plugin import operators, panels, shards

    names = {cls().config.name
             for cls in operators.OPERATORS + shards.OPERATORS + panels.PANELS}
    m = manifest()
    assert names == set(m.get("operators", []) + m.get("panels", []))


def test_fiftyone_reads_the_manifest_without_complaint(caplog):
    """What ``fiftyone plugins list/info/requirements`` read: a compatibility range FiftyOne
    parses and the running FiftyOne meets, and the Python entry found."""
    import logging

    import fiftyone.plugins as fop
    from fiftyone.plugins.definitions import PluginDefinition

    pd = PluginDefinition.from_disk(os.path.join(REPO_ROOT, "fiftyone.yml"))
    assert pd.has_py and pd.fiftyone_requirement.startswith("fiftyone>=")
    with caplog.at_level(logging.INFO, logger="fiftyone"):
        fop.ensure_plugin_compatibility(pd.name, error_level=0, log_success=True)
    assert "is compatible" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
