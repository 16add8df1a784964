#!/usr/bin/env python3
"""What one spool-style flush costs this machine, by the size of the write.

Usage: benches/disk_flush_cost.py DIR GROUP_KIB FLUSHES_PER_S SECONDS

Writes GROUP_KIB around the page cache (O_DIRECT, 4 KiB-aligned, over a
64 MiB file made ready first, as the spool writes over its segments) and
then fdatasync()s, FLUSHES_PER_S times a second, in DIR (put it on the
spool's filesystem); prints, per flush, the kernel, softirq, steal and
iowait time of the whole machine (/proc/stat) and this process's own CPU.
Compare two group sizes at the same rate to tell a cost per flush from a
cost per byte (BENCHMARKS.md, 2026-12-07 late). Linux only; the file is
removed at the end.
"""
import mmap
import os
import sys
import time


def machine():
    return [int(x) for x in open("/proc/stat").readline().split()[1:]]


def main(directory, kib, rate, seconds):
    path = os.path.join(directory, "disk_flush_cost.bin")
    size = 64 << 20
    group = kib * 1024
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o600)
    try:
        # mmap gives page-aligned buffers, as O_DIRECT asks.
        zeros = mmap.mmap(-1, 1 << 20)
        for offset in range(0, size, 1 << 20):
            os.pwrite(fd, zeros, offset)
        os.fsync(fd)
        buf = mmap.mmap(-1, group)
        buf.write(os.urandom(group))
        before, started, own = machine(), time.time(), sum(os.times()[:2])
        flushes, offset, due = 0, 0, started
        while time.time() - started < seconds:
            wait = due - time.time()
            if wait > 0:
                time.sleep(wait)
            due += 1.0 / rate
            os.pwrite(fd, buf, offset)
            os.fdatasync(fd)
            offset = (offset + group) % (size - group) // 4096 * 4096
            flushes += 1
        after, ended, own = machine(), time.time(), sum(os.times()[:2]) - own
    finally:
        os.close(fd)
        os.unlink(path)
    hz = os.sysconf("SC_CLK_TCK")
    names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
    per = {n: (b - a) / hz * 1e6 / flushes for n, a, b in zip(names, before, after)}
    elapsed = ended - started
    print(
        f"{kib} KiB x {flushes / elapsed:.0f}/s ({flushes * group / elapsed / 1e6:.1f} MB/s); "
        "per flush (µs): "
        + " ".join(f"{n}={per[n]:.0f}" for n in ["system", "softirq", "steal", "iowait"])
        + f" this process={own * 1e6 / flushes:.0f}"
    )


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
