"""pytest_release.fsutil with real files and real processes: a replaced file is never seen half
written, an exclusive create has exactly one winner among racing processes, appends stay whole."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_release.fsutil import append, atomic_copy, atomic_symlink, atomic_write, fsync_dir, temp_path, write_new

ROOT = Path(__file__).resolve().parent.parent


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def _script(code: str) -> list[str]:
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r})\n" + textwrap.dedent(code)]


@pytest.mark.parametrize("sync", [False, True])
@pytest.mark.parametrize("size", [0, 1, 65537])
def test_atomic_write_replaces_the_content_and_leaves_no_temporary_file(tmp_path: Path, sync: bool,
                                                                         size: int) -> None:
    path = tmp_path / "deep" / "er" / "file.bin"
    atomic_write(path, b"old", sync=sync)
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    atomic_write(path, data, sync=sync)
    assert path.read_bytes() == data
    assert _leftovers(path.parent) == []


@pytest.mark.parametrize("mode", [0o600, 0o644])
def test_files_get_the_mode_asked_for_within_the_umask(tmp_path: Path, mode: int) -> None:
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a", b"1", mode=mode)
        write_new(tmp_path / "b", b"1", mode=mode)
        append(tmp_path / "c", b"1", mode=mode)
    finally:
        os.umask(old)
    for name in "abc":
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode


def test_a_failed_atomic_write_keeps_the_old_file_and_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "file"
    atomic_write(path, b"old")
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic_write(tmp_path / "dir", b"new")  # a rename cannot replace a folder
    assert path.read_bytes() == b"old" and _leftovers(tmp_path) == []


def test_a_reader_never_sees_a_file_half_replaced(tmp_path: Path) -> None:
    path = tmp_path / "state"
    size = 256 * 1024
    atomic_write(path, b"a" * size)
    writer = subprocess.Popen(_script(f"""
        from pathlib import Path
        from pytest_release.fsutil import atomic_write
        for i in range(300):
            atomic_write(Path({str(path)!r}), (b"ab"[i % 2:i % 2 + 1]) * {size})
    """))
    seen = set()
    try:
        while writer.poll() is None:
            data = path.read_bytes()
            assert len(data) == size and data.count(data[:1]) == size, "a torn read"
            seen.add(data[:1])
    finally:
        writer.wait(60)
    assert writer.returncode == 0
    assert path.read_bytes() in (b"a" * size, b"b" * size) and _leftovers(tmp_path) == []


def test_write_new_never_replaces_a_file(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    write_new(path, b"first")
    with pytest.raises(FileExistsError):
        write_new(path, b"second")
    assert path.read_bytes() == b"first" and _leftovers(tmp_path) == []


def test_write_new_never_replaces_a_symlink_even_a_dangling_one(tmp_path: Path) -> None:
    path = tmp_path / "link"
    path.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        write_new(path, b"data")
    assert not (tmp_path / "nowhere").exists() and path.is_symlink()


@pytest.mark.parametrize("racers", [2, 8])
def test_exactly_one_of_racing_processes_creates_the_file(tmp_path: Path, racers: int) -> None:
    path = tmp_path / "claim"
    go = tmp_path / "go"
    procs = [subprocess.Popen(_script(f"""
        import os, time
        from pathlib import Path
        from pytest_release.fsutil import write_new
        print("ready", flush=True)
        while not os.path.exists({str(go)!r}):
            time.sleep(0.001)
        try:
            write_new(Path({str(path)!r}), b"racer {n}\\n" * 5000)
        except FileExistsError:
            print("lost")
        else:
            print("won")
    """), stdout=subprocess.PIPE, text=True) for n in range(racers)]
    for proc in procs:  # every racer is waiting at the line: then they all go at once
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    go.touch()
    results = [proc.communicate(timeout=60)[0].strip() for proc in procs]
    assert sorted(results) == ["lost"] * (racers - 1) + ["won"]
    winner = results.index("won")
    assert path.read_bytes() == f"racer {winner}\n".encode() * 5000
    assert _leftovers(tmp_path) == []


def test_appends_from_racing_processes_stay_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "journal" / "events.jsonl"
    procs = [subprocess.Popen(_script(f"""
        from pathlib import Path
        from pytest_release.fsutil import append
        for i in range(100):
            append(Path({str(path)!r}), ("{n}:" + "x" * 500 + f":{{i}}\\n").encode(), sync={n % 2 == 0})
    """)) for n in range(4)]
    for proc in procs:
        assert proc.wait(60) == 0
    lines = path.read_text().splitlines()
    assert len(lines) == 400
    for n in range(4):
        mine = [line for line in lines if line.startswith(f"{n}:")]
        assert [line.rsplit(":", 1)[1] for line in mine] == [str(i) for i in range(100)]
        assert all(len(line.split(":")[1]) == 500 for line in mine)


def test_atomic_copy_copies_content_and_mode(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"payload" * 1000)
    source.chmod(0o640)
    target = tmp_path / "out" / "target"
    target.parent.mkdir()
    target.write_bytes(b"old")
    atomic_copy(source, target)
    assert target.read_bytes() == source.read_bytes() and stat.S_IMODE(target.stat().st_mode) == 0o640
    atomic_copy(source, tmp_path / "plain", metadata=False)
    assert (tmp_path / "plain").read_bytes() == source.read_bytes()
    assert _leftovers(target.parent) == [] and _leftovers(tmp_path) == []


@pytest.mark.parametrize("was", ["nothing", "link", "file"])
@pytest.mark.parametrize("relative", [True, False])
def test_atomic_symlink_replaces_what_was_there_and_keeps_the_form_written(tmp_path: Path, was: str,
                                                                           relative: bool) -> None:
    (tmp_path / "releases" / "1").mkdir(parents=True)
    (tmp_path / "releases" / "2").mkdir()
    link = tmp_path / "current"
    if was == "link":
        link.symlink_to("releases/1")
    elif was == "file":
        link.write_text("x")
    written = "releases/2" if relative else str(tmp_path / "releases" / "2")
    atomic_symlink(link, written)
    assert os.readlink(link) == written and link.resolve() == (tmp_path / "releases" / "2").resolve()
    assert _leftovers(tmp_path) == []


def test_temporary_names_are_hidden_fresh_and_beside_their_target(tmp_path: Path) -> None:
    names = {temp_path(tmp_path / "f.json") for _ in range(200)}
    assert len(names) == 200
    assert all(n.parent == tmp_path and n.name.startswith(".f.json.") and n.name.endswith(".tmp") for n in names)


def test_fsync_dir_syncs_a_folder_and_ignores_one_it_cannot_open(tmp_path: Path) -> None:
    fsync_dir(tmp_path)
    fsync_dir(tmp_path / "missing")
