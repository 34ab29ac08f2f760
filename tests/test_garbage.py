"""The garbage collector's policy for long-lived objects (collab.garbage): what
survived a full collection is not walked again until the next rescan."""

from __future__ import annotations

import gc
import weakref

from collab.garbage import LongLivedObjects


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector frees it


def test_what_survives_a_full_collection_is_set_aside_until_the_next_rescan():
    long_lived = LongLivedObjects(rescan_s=600)
    long_lived.install()
    try:
        node = Node()
        gc.collect()
        assert gc.get_freeze_count() > 0  # the survivors, node among them
        alive = weakref.ref(node)
        del node
        gc.collect()
        assert alive() is not None  # set aside: not walked, its cycle not freed
        long_lived.rescan()
        gc.collect()
        assert alive() is None
    finally:
        long_lived.uninstall()
    assert gc.get_freeze_count() == 0 and long_lived._collected not in gc.callbacks
