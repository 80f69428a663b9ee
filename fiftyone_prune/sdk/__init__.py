"""The FiftyOne layer: reads and writes sample fields, runs, tags and views, and calls
the pure algorithms in :mod:`fiftyone_prune.core`."""
