"""Build the offline busybox template into DATA_DIR/templates (default /var/lib/ovz/templates)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from collection_path import ensure_collection_path  # noqa: E402

ensure_collection_path()

from ansible_collections.ovz.containers.plugins.module_utils.templates import build_busybox_template  # noqa: E402

data_dir = sys.argv[1] if len(sys.argv) > 1 else "/var/lib/ovz"
print(build_busybox_template(os.path.join(data_dir, "templates")))
