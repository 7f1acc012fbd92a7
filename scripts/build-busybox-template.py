"""Build the offline busybox template into DATA_DIR/templates (default /var/lib/ovz/templates)."""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.join(REPO, ".tmp", "collections")
LINK = os.path.join(ROOT, "ansible_collections", "ovz", "containers")
if not os.path.islink(LINK):
    os.makedirs(os.path.dirname(LINK), exist_ok=True)
    os.symlink(REPO, LINK)
sys.path.insert(0, ROOT)

from ansible_collections.ovz.containers.plugins.module_utils.templates import build_busybox_template  # noqa: E402

data_dir = sys.argv[1] if len(sys.argv) > 1 else "/var/lib/ovz"
print(build_busybox_template(os.path.join(data_dir, "templates")))
