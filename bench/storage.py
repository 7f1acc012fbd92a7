"""Storage benchmark (issue 6): fio inside an image-layout and a directory-layout container
vs the host filesystem underneath, in one run.

  host       fio on the host, in a directory of the filesystem that holds the bench's data_dir
  directory  fio inside a directory-layout container (its private directory is on that filesystem)
  image      fio inside an image-layout container (ext4 in a sparse image file on that filesystem,
             through a loop device)

Jobs (each --runtime seconds, on a --size file, interleaved: job j on every target, then job j+1):

  seq-write   1 MiB blocks, buffered, fsync at the end (end_fsync=1): what an application sees
  seq-read    1 MiB blocks, O_DIRECT
  rand-read   4 KiB blocks, O_DIRECT, libaio, iodepth 16
  rand-write  4 KiB blocks, O_DIRECT, libaio, iodepth 16

fio runs inside the containers through the engine's exec (their namespaces and cgroups): the
busybox template has no fio, so the host's /usr/bin/fio and its libraries are copied into each
container's tree first. The image's loop device does buffered I/O on its backing file (no
LO_FLAGS_DIRECT_IO), so O_DIRECT inside the image reaches the host's page cache, not the disk:
the image rows of O_DIRECT jobs can be faster than the host's. The README says so next to the numbers.

    python3 bench/storage.py                        # bench/results/storage.json
    python3 bench/storage.py --runtime 5 --size 256M --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402  pylint: disable=wrong-import-position

JOBS = {
    "seq-write": ["--rw=write", "--bs=1M", "--end_fsync=1", "--ioengine=psync"],
    "seq-read": ["--rw=read", "--bs=1M", "--direct=1", "--ioengine=psync"],
    "rand-read": ["--rw=randread", "--bs=4k", "--direct=1", "--ioengine=libaio", "--iodepth=16"],
    "rand-write": ["--rw=randwrite", "--bs=4k", "--direct=1", "--ioengine=libaio", "--iodepth=16"],
}
TARGETS = ("host", "directory", "image")
FIO = "/usr/bin/fio"


def fio_argv(job: str, directory: str, size: str, runtime: int) -> list:
    return [FIO, "--name=ovzbench", "--directory=%s" % directory, "--filename=ovzbench.fio", "--size=%s" % size,
            "--runtime=%d" % runtime, "--time_based=%d" % (0 if job == "seq-write" else 1), "--numjobs=1",
            "--group_reporting", "--output-format=json", "--random_generator=tausworthe64"] + JOBS[job]


def parse_fio(text: str, job: str) -> dict:
    data = json.loads(text[text.index("{"):])
    result = data["jobs"][0]["write" if "write" in job else "read"]
    return {"mib_s": round(result["bw_bytes"] / 1048576.0, 1), "iops": round(result["iops"]),
            "lat_us_p50": round(result.get("clat_ns", {}).get("percentile", {}).get("50.000000", 0) / 1000.0, 1)}


def install_fio(root: str) -> None:
    """Copy fio and every library it links into a container's tree (as a package would put them)."""
    out = C.run(["ldd", FIO]).stdout
    files = [FIO] + [part for line in out.splitlines() for part in line.split() if part.startswith("/")]
    for path in files:
        target = os.path.join(root, path.lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.realpath(path), target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime", type=int, default=10, help="seconds per job (default 10)")
    parser.add_argument("--size", default="512M", help="file size per job (default 512M)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of every job on every target (default 2)")
    parser.add_argument("--base", default="/var/tmp", help="filesystem under test (default /var/tmp)")
    parser.add_argument("--json", default=str(C.RESULTS_DIR / "storage.json"))
    args = parser.parse_args()
    if not os.path.exists(FIO):
        print("fio is missing (apt-get install fio)", file=sys.stderr)
        return 2
    C.install_interrupt_handlers()
    tmp = C.make_tmpdir("bench", args.base)
    manager = None
    names = []
    try:
        tree = C.collections_tree(tmp / "collections")
        engine, why = C.import_engine(tree, "container", "templates")
        if engine is None:
            print("engine not importable: %s" % why, file=sys.stderr)
            return 2
        template = engine["templates"].build_busybox_template(str(tmp / "templates"))
        manager = engine["container"].ContainerManager(str(tmp / "data"), "ovzbench%d" % os.getpid())
        host_dir = tmp / "host"
        host_dir.mkdir()
        dirs = {"host": str(host_dir)}
        for layout in ("directory", "image"):
            name = "ovzb%d%s" % (os.getpid(), layout[0])
            names.append(name)
            manager.create(name, template, layout=layout, diskspace=[2 << 30, 2 << 30] if layout == "image" else None)
            manager.start(name, wait_boot=True, timeout=30)
            install_fio(manager.layout.root(name))
            dirs[layout] = name
        results = {job: {target: [] for target in TARGETS} for job in JOBS}
        for _round in range(args.repeat):
            for job in JOBS:
                for target in TARGETS:
                    if target == "host":
                        out = C.run(fio_argv(job, dirs["host"], args.size, args.runtime), timeout=args.runtime * 20).stdout
                        os.unlink(os.path.join(dirs["host"], "ovzbench.fio"))
                    else:
                        res = manager.exec(dirs[target], fio_argv(job, "/", args.size, args.runtime) + ["--unlink=1"],
                                           timeout=args.runtime * 20)
                        if res.rc != 0:
                            raise C.StepError("fio in %s: %s" % (target, res.stderr.decode(errors="replace")[-500:]))
                        out = res.stdout.decode()
                    results[job][target].append(parse_fio(out, job))
                    print("%-10s %-9s %s" % (job, target, results[job][target][-1]), flush=True)
        summary = {}
        print("\n%-10s | %-24s | %-31s | %-31s" % ("job", "host", "directory (vs host)", "image (vs host)"))
        print("-" * 106)
        for job in JOBS:
            row = {}
            for target in TARGETS:
                runs = results[job][target]
                row[target] = {"mib_s": round(statistics.median(r["mib_s"] for r in runs), 1),
                               "iops": round(statistics.median(r["iops"] for r in runs)), "runs": runs}
            for target in ("directory", "image"):
                base = row["host"]["mib_s"] or 1
                row[target]["vs_host"] = round(row[target]["mib_s"] / base, 3)
            summary[job] = row
            cells = ["%7.1f MiB/s %6d IOPS" % (row[t]["mib_s"], row[t]["iops"]) for t in TARGETS]
            print("%-10s | %s | %s (%4.0f%%) | %s (%4.0f%%)"
                  % (job, cells[0], cells[1], 100 * row["directory"]["vs_host"], cells[2], 100 * row["image"]["vs_host"]))
        fs = C.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", str(tmp)]).stdout.strip()
        path = C.write_results(args.json, C.machine_info({"fio": C.dpkg_version("fio")}), args.repeat, summary,
                               settings={"runtime_s": args.runtime, "size": args.size, "filesystem": fs,
                                         "jobs": {k: " ".join(v) for k, v in JOBS.items()}})
        print("\nwrote %s" % path)
        return 0
    finally:
        if manager is not None:
            for name in names:
                try:
                    manager.destroy(name)
                except Exception as exc:  # noqa: BLE001 - clean as much as possible
                    print("destroy %s: %s" % (name, exc), file=sys.stderr)
            parent = manager.backend.resolve_parent(manager.cgroup_parent)
            for hierarchy, rel in parent.items():
                directory = os.path.join(manager.backend.mountpoint(hierarchy), rel.lstrip("/"))
                if os.path.isdir(directory):
                    subprocess.run(["rmdir", directory], check=False)
        for problem in C.remove_tmpdir(tmp):
            print(problem, file=sys.stderr)
        C.warn_leftovers()


if __name__ == "__main__":
    sys.exit(main())
