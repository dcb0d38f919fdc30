"""Archives from the network unpack inside their destination, with or without tarfile's data
filter (Python < 3.11.4 lacks it: the same rules are applied by hand)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from llamastudio.archives import extract_tar
from llamastudio.errors import InvalidInput


def _tar(path: Path, members: list[tuple[str, str, str]]) -> Path:
    """(kind, name, content or link target) → a .tar.gz at ``path``."""
    with tarfile.open(path, "w:gz") as tf:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                info.mode = 0o4755  # set-uid: never kept
                tf.addfile(info, io.BytesIO(data.encode()))
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tf.addfile(info)
            elif kind == "device":
                info.type = tarfile.CHRTYPE
                tf.addfile(info)
    return path


@pytest.fixture(params=["data-filter", "by-hand"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "by-hand":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return str(request.param)


def test_a_good_archive_unpacks(tmp_path: Path, mode: str) -> None:
    archive = _tar(
        tmp_path / "ok.tar.gz",
        [("file", "pkg/bin/llama-server", "#!/bin/sh\n"), ("symlink", "pkg/bin/server", "llama-server")],
    )
    dest = tmp_path / "out"
    dest.mkdir()
    with tarfile.open(archive) as tf:
        extract_tar(tf, dest, archive.name)
    assert (dest / "pkg/bin/llama-server").read_text() == "#!/bin/sh\n"
    assert (dest / "pkg/bin/server").resolve() == (dest / "pkg/bin/llama-server").resolve()
    assert not (dest / "pkg/bin/llama-server").stat().st_mode & 0o4000


@pytest.mark.parametrize(
    "members",
    [
        [("file", "../escape.txt", "x")],
        [("symlink", "pkg/link", "../../outside")],
        [("symlink", "pkg/abs", "/etc/passwd")],
        [("device", "pkg/tty", "")],
    ],
)
def test_a_member_escaping_the_destination_is_refused(
    tmp_path: Path, mode: str, members: list[tuple[str, str, str]]
) -> None:
    archive = _tar(tmp_path / "bad.tar.gz", members)
    dest = tmp_path / "out"
    dest.mkdir()
    with tarfile.open(archive) as tf, pytest.raises(InvalidInput, match=r"bad\.tar\.gz"):
        extract_tar(tf, dest, archive.name)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "outside").exists()


def test_an_absolute_name_lands_inside(tmp_path: Path, mode: str) -> None:
    archive = _tar(tmp_path / "abs.tar.gz", [("file", "/abs.txt", "x")])
    dest = tmp_path / "out"
    dest.mkdir()
    with tarfile.open(archive) as tf:
        extract_tar(tf, dest, archive.name)
    assert (dest / "abs.txt").read_text() == "x"


@pytest.mark.parametrize(
    "members",
    [
        # each link points inside when it is checked; together they lead out
        [("symlink", "x", "."), ("symlink", "b", "x/.."), ("file", "b/pwned", "x")],
        [("symlink", "b", "x/../escaped.txt"), ("symlink", "x", "."), ("file", "b", "x")],
    ],
)
def test_a_chain_of_links_cannot_lead_out(
    tmp_path: Path, mode: str, members: list[tuple[str, str, str]]
) -> None:
    """Regression: by hand, every name and link was checked before anything was unpacked, so
    links resolved against an empty directory: ``x`` → ``.`` then ``b`` → ``x/..`` passed, and
    ``b/pwned`` was written beside the destination (the data filter checks each as it unpacks)."""
    archive = _tar(tmp_path / "bad.tar.gz", members)
    dest = tmp_path / "out"
    dest.mkdir()
    with tarfile.open(archive) as tf, pytest.raises(InvalidInput, match=r"bad\.tar\.gz"):
        extract_tar(tf, dest, archive.name)
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "escaped.txt").exists()


def test_a_read_only_directory_still_gets_its_files(tmp_path: Path, mode: str) -> None:
    with tarfile.open(tmp_path / "ro.tar.gz", "w:gz") as tf:
        d = tarfile.TarInfo("pkg")
        d.type, d.mode = tarfile.DIRTYPE, 0o555
        tf.addfile(d)
        f = tarfile.TarInfo("pkg/file")
        f.size = 1
        tf.addfile(f, io.BytesIO(b"x"))
    dest = tmp_path / "out"
    dest.mkdir()
    with tarfile.open(tmp_path / "ro.tar.gz") as tf:
        extract_tar(tf, dest, "ro.tar.gz")
    assert (dest / "pkg/file").read_bytes() == b"x"
