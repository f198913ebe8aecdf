"""cProfile files read by package: where a server's own CPU time went."""

from __future__ import annotations

from pathlib import Path

from bench.servers import ROOT


def _profile_group(filename: str, function: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if filename.startswith(str(ROOT) + "/"):
        return "creditstream: " + filename[len(str(ROOT)) + 1 :].split("/", 1)[0]
    if filename == "~":  # C functions: name the system calls, they are a cost of their own
        name = function.strip("<>").replace("method ", "").replace("built-in ", "")
        for syscall in ("send", "recv", "poll", "select", "write", "read"):
            if f"'{syscall}" in name or f".{syscall}" in name:
                return f"syscalls ({syscall}…)"
        return "C builtins"
    return "stdlib: " + Path(filename).name


def profile_summary(path: str, top: int = 30) -> str:
    """A cProfile file by package (own time, `tottime`) and its top functions. Cumulative time
    means little for coroutines (it includes the time they are suspended), own time does."""
    import pstats
    from collections import Counter

    stats = pstats.Stats(path)
    groups: Counter[str] = Counter()
    rows = []
    for (filename, line, function), (_, calls, own, _, _) in stats.stats.items():  # type: ignore
        groups[_profile_group(filename, function)] += own
        rows.append((own, calls, f"{filename}:{line}({function})"))
    total = sum(groups.values()) or 1.0
    lines = [f"own CPU time by package, {total:.2f} s profiled", ""]
    lines += [
        f"{seconds:8.3f} s {100 * seconds / total:5.1f} %  {name}"
        for name, seconds in groups.most_common(20)
    ]
    lines += ["", f"top {top} functions by own time (tottime)", ""]
    lines += [
        f"{own:8.3f} s {100 * own / total:5.1f} % {calls:9d}  {where}"
        for own, calls, where in sorted(rows, reverse=True)[:top]
    ]
    return "\n".join(lines) + "\n"
