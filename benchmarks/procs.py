"""A server process and its workers as /proc shows them: the benchmarks' and the chaos suite's RSS figures."""
from __future__ import annotations

from pathlib import Path


def children(pid: int) -> list[int]:
    """The direct children of `pid` (a supervisor's workers), by pid."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(d.name))
    return sorted(found)


def rss(pid: int) -> float | None:
    """VmRSS of one process in MB (one decimal); None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def memory(pid: int) -> dict | None:
    """RSS, PSS, shared and private memory of one process in MB, from /proc/PID/smaps_rollup.

    RSS counts every page the process maps, also those it shares with others (a snapshot
    inherited from the supervisor counts fully in every worker); PSS divides each shared page
    among the processes sharing it, so the PSS of a server's processes add up to the memory the
    server really uses. None when the process is gone.
    """
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    kb = {}
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            kb[name] = int(parts[0])
    mb = lambda *names: round(sum(kb.get(n, 0) for n in names) / 1024, 1)  # noqa: E731
    return {"rss_mb": mb("Rss"), "pss_mb": mb("Pss"), "shared_mb": mb("Shared_Clean", "Shared_Dirty"),
            "private_mb": mb("Private_Clean", "Private_Dirty")}


def server_memory(pid: int) -> dict:
    """A server's memory: the main process (the supervisor with --workers N), each worker, and
    the totals; `pss_total_mb` (supervisor and workers, shared pages counted once) is the figure
    to read "all workers together" against, `rss_total_mb` counts shared pages once per process."""
    main = memory(pid)
    workers = [m for m in (memory(c) for c in children(pid)) if m is not None]
    every = ([main] if main else []) + workers
    return {"main": main, "workers": workers,
            "pss_total_mb": round(sum(m["pss_mb"] for m in every), 1),
            "rss_total_mb": round(sum(m["rss_mb"] for m in every), 1)}
