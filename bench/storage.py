"""Storage benchmark (issue 6): fio inside an image-layout and a directory-layout container
vs the host filesystem underneath, in one run.

  host            fio on the host, in a directory of the filesystem that holds the bench's data_dir
  directory       fio inside a directory-layout container (its private directory is on that filesystem)
  image           fio inside an image-layout container (ext4 in a sparse image file on that filesystem,
                  through a loop device doing direct I/O on the file, as the engine attaches it)
  image-buffered  the same, with the loop device switched to buffered I/O (LOOP_SET_DIRECT_IO 0): the
                  engine's behaviour before direct I/O, measured in the same run for comparison

Jobs (each --runtime seconds, on a --size file, interleaved: job j on every target, then job j+1):

  seq-write   1 MiB blocks, buffered, fsync at the end (end_fsync=1): what an application sees
  seq-read    1 MiB blocks, O_DIRECT
  rand-read   4 KiB blocks, O_DIRECT, libaio, iodepth 16
  rand-write  4 KiB blocks, O_DIRECT, libaio, iodepth 16

fio runs inside the containers through the engine's exec (their namespaces and cgroups): the
busybox template has no fio, so the host's /usr/bin/fio and its libraries are copied into each
container's tree first. With a buffered loop device O_DIRECT inside the image stops at the host's
page cache of the image file, not the disk, so image-buffered rows of O_DIRECT jobs can be faster
than the host's.

The machine is shared and noisy, so besides the median of the rounds each target gets a paired
ratio: in every round the target's run is divided by the host's run of the same job a few seconds
earlier, and the median of those per-round ratios is reported (``paired``); the load average is
recorded at the start of every round.

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
TARGETS = ("host", "directory", "image", "image-buffered")
LOOP_SET_DIRECT_IO = 0x4C08
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


def set_loop_direct_io(device: str, on: bool) -> None:
    """LOOP_SET_DIRECT_IO on an attached loop device (what ``losetup --direct-io=on|off`` does)."""
    import fcntl
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, LOOP_SET_DIRECT_IO, 1 if on else 0)
    finally:
        os.close(fd)


def reset_scheduler(device: str) -> str:
    """Give a loop device the kernel's default I/O scheduler for loop devices (none) and return the one
    it had: a loop device keeps its queue settings between attachments, so a scheduler an earlier user
    chose (bfq idles between a process's synchronous requests) would skew one image row against another."""
    path = "/sys/block/%s/queue/scheduler" % os.path.basename(device)
    with open(path) as handle:
        text = handle.read()
    before = text[text.index("[") + 1:text.index("]")] if "[" in text else text.strip()
    if before != "none":
        with open(path, "w") as handle:
            handle.write("none")
    return before


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
    machine = C.machine_info({"fio": C.dpkg_version("fio")})
    tmp = C.make_tmpdir("bench", args.base)
    manager = None
    names = []
    try:
        tree = C.collections_tree(tmp / "collections")
        engine, why = C.import_engine(tree, "container", "templates", "storage")
        if engine is None:
            print("engine not importable: %s" % why, file=sys.stderr)
            return 2
        template = engine["templates"].build_busybox_template(str(tmp / "templates"))
        manager = engine["container"].ContainerManager(str(tmp / "data"), "ovzbench%d" % os.getpid())
        host_dir = tmp / "host"
        host_dir.mkdir()
        dirs = {"host": str(host_dir)}
        loops = {}
        for target in TARGETS[1:]:
            layout = target.split("-", maxsplit=1)[0]
            name = "ovzb%d%s" % (os.getpid(), "".join(word[0] for word in target.split("-")))
            names.append(name)
            manager.create(name, template, layout=layout, diskspace=[2 << 30, 2 << 30] if layout == "image" else None)
            manager.start(name, wait_boot=True, timeout=30)
            install_fio(manager.layout.root(name))
            dirs[target] = name
            if layout == "image":
                device = manager.storage(manager.load(name)).loop_device()
                if target == "image-buffered":
                    set_loop_direct_io(device, False)
                loops[target] = {"device": device, "direct_io": engine["storage"].loop_direct_io(device),
                                 "scheduler": reset_scheduler(device)}
                print("%-14s %s %s" % (target, device, loops[target]), flush=True)
        results = {job: {target: [] for target in TARGETS} for job in JOBS}
        loadavg_rounds = []
        for _round in range(args.repeat):
            loadavg_rounds.append([round(x, 2) for x in os.getloadavg()])
            print("round %d, load average %s" % (_round + 1, loadavg_rounds[-1]), flush=True)
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
                    print("%-10s %-14s %s" % (job, target, results[job][target][-1]), flush=True)
        summary = {}
        header = ["%-24s" % "host"] + ["%-38s" % ("%s (vs host, paired)" % t) for t in TARGETS[1:]]
        print("\n%-10s | %s" % ("job", " | ".join(header)))
        print("-" * (13 + 27 + 41 * (len(TARGETS) - 1)))
        for job in JOBS:
            row = {}
            for target in TARGETS:
                runs = results[job][target]
                row[target] = {"mib_s": round(statistics.median(r["mib_s"] for r in runs), 1),
                               "iops": round(statistics.median(r["iops"] for r in runs)), "runs": runs}
            for target in TARGETS[1:]:
                base = row["host"]["mib_s"] or 1
                row[target]["vs_host"] = round(row[target]["mib_s"] / base, 3)
                pairs = [r["mib_s"] / (h["mib_s"] or 1) for r, h in zip(results[job][target], results[job]["host"])]
                row[target]["paired_ratios"] = [round(x, 3) for x in pairs]
                row[target]["paired"] = round(statistics.median(pairs), 3)
            summary[job] = row
            cells = ["%7.1f MiB/s %6d IOPS" % (row["host"]["mib_s"], row["host"]["iops"])]
            cells += ["%7.1f MiB/s %6d IOPS (%4.0f%%)" % (row[t]["mib_s"], row[t]["iops"], 100 * row[t]["paired"])
                      for t in TARGETS[1:]]
            print("%-10s | %s" % (job, " | ".join(cells)))
        fs = C.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", str(tmp)]).stdout.strip()
        path = C.write_results(args.json, machine, args.repeat, summary,
                               settings={"runtime_s": args.runtime, "size": args.size, "filesystem": fs,
                                         "loops": loops, "loadavg_rounds": loadavg_rounds,
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
