"""Make ``ansible_collections.ovz.containers`` importable from this checkout.

Scripts, tests and benchmarks import the engine through the collection's
real package path; this links ``.tmp/collections/ansible_collections/ovz/containers``
to the repository root and puts ``.tmp/collections`` first on ``sys.path``.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS_ROOT = os.path.join(REPO, ".tmp", "collections")


def ensure_collection_path():
    link = os.path.join(COLLECTIONS_ROOT, "ansible_collections", "ovz", "containers")
    if not os.path.islink(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        try:
            os.symlink(REPO, link)
        except FileExistsError:
            pass
    if COLLECTIONS_ROOT not in sys.path:
        sys.path.insert(0, COLLECTIONS_ROOT)
    return COLLECTIONS_ROOT
