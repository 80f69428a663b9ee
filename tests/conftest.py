"""Shared fixtures. Every test session uses its own MongoDB database (real FiftyOne,
real mongod), so tests never see or touch a user's datasets."""

import os
import sys
import uuid

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ["FIFTYONE_DATABASE_NAME"] = f"fiftyone_prune_test_{uuid.uuid4().hex[:8]}"
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["FIFTYONE_PLUGINS_DIR"] = REPO_ROOT

import pytest  # noqa: E402


def unique_name(prefix="fop"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def images_root(tmp_path_factory):
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="session")
def digits_images(images_root):
    """120 real MNIST digits (12 per class on average), written once per session."""
    from fiftyone_prune.sdk.demo import write_demo_images

    return write_demo_images(str(images_root / "mnist"), "mnist", max_samples=120, seed=0)


def labelled_dataset(name, images, persistent=False):
    """A dataset of ``(filepath, label)`` images with labels in ``ground_truth``."""
    import fiftyone as fo

    dataset = fo.Dataset(name, persistent=persistent)
    dataset.add_samples(
        [fo.Sample(filepath=p, ground_truth=fo.Classification(label=l)) for p, l in images]
    )
    return dataset


@pytest.fixture()
def digits_dataset(digits_images):
    import fiftyone as fo

    dataset = labelled_dataset(unique_name("digits"), digits_images)
    yield dataset
    if fo.dataset_exists(dataset.name):
        fo.delete_dataset(dataset.name)


@pytest.fixture(scope="session")
def efficientnet_small():
    """The real offline ImageNet model at 32 px: fast enough for a 2-core CPU."""
    from fiftyone_prune.core.models import efficientnet_lite0

    return efficientnet_lite0(image_size=32)


def pytest_sessionfinish(session, exitstatus):
    # only a session that connected has a database to drop: connecting just to drop
    # nothing cost the unit tests 5 s (the database service starts on connect)
    database = sys.modules.get("fiftyone.core.odm.database")
    if database is None or database._client is None:
        return
    try:
        database.get_db_client().drop_database(os.environ["FIFTYONE_DATABASE_NAME"])
    except Exception:
        pass


def pytest_collection_modifyitems(config, items):
    """Browser tests run last: Playwright's sync API keeps an asyncio loop running in the
    main thread until the session ends, and FiftyOne's ``execute_operator`` then returns
    a Task instead of running the operator."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)
