"""Where stored things live: a local path or an object-store URI (s3://, gs://), one interface.

No torch, DALI or Ray. `Folder(location)` resolves the location with pyarrow.fs (credentials and
endpoints from the standard environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_ENDPOINT_URL, GOOGLE_APPLICATION_CREDENTIALS, ...) and reads, lists and writes files in it
by name. Writes are atomic as far as the store allows: locally a temporary name, then a rename;
on an object store one object is written by one PUT (a multipart upload completes when its
stream closes), so a reader sees the whole object or none. Nothing is appended in place, and
a shard folder's manifest is written last, so a folder is complete when its manifest exists.
"""

from __future__ import annotations

import fnmatch
import posixpath
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


def _split_options(uri: str) -> tuple[str, str]:
    """("s3://b/a", "endpoint_override=h&region=r") for "s3://b/a?endpoint_override=h&region=r";
    (uri, "") when it ends in no such options (a "?" inside a key is part of the key)."""
    base, mark, options = uri.rpartition("?")
    if mark and options and all("=" in pair for pair in options.split("&")):
        return base, options
    return uri, ""


def join(location: str, name: str) -> str:
    """location/name as text: a local path, or a URI whose options (?endpoint_override=...)
    stay at its end, where pyarrow reads them."""
    if not is_uri(location):
        return str(Path(location) / name)
    base, options = _split_options(str(location))
    return f"{base.rstrip('/')}/{name}" + (f"?{options}" if options else "")


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem and path for a URI. For s3:// and gs:// only the bucket and the
    options are parsed as a URI and the key is taken as it is written: keys are not URL-encoded
    (Kinetics class folders hold spaces, which pyarrow's URI parser refuses, and "#" or "%xx"
    would cut or change the key)."""
    base, options = _split_options(uri)
    scheme, _, rest = base.partition("://")
    bucket, _, key = rest.partition("/")
    if scheme not in ("s3", "gs", "gcs") or not bucket:
        return pafs.FileSystem.from_uri(uri)
    fs, root = pafs.FileSystem.from_uri(f"{scheme}://{bucket}" + (f"?{options}" if options
                                                                  else ""))
    key = key.strip("/")
    return fs, posixpath.join(root, key) if key else root


class Folder:
    """A folder, local or in an object store; files are addressed by relative names ("a/b")."""

    def __init__(self, location: str | Path | Folder) -> None:
        if isinstance(location, Folder):
            self.fs, self.path, self.uri = location.fs, location.path, location.uri
            return
        text = str(location)
        if is_uri(text):
            self.fs, self.path = _filesystem(text)
            self.uri = text.rstrip("/")
        else:
            self.fs, self.path = pafs.LocalFileSystem(), str(Path(text).resolve())
            self.uri = self.path

    def __str__(self) -> str:
        return self.uri

    def __truediv__(self, name: str) -> Folder:
        child = Folder(self)
        child.path = posixpath.join(self.path, name)
        child.uri = join(self.uri, name)
        return child

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    def _at(self, name: str) -> str:
        return posixpath.join(self.path, name) if name else self.path

    def exists(self, name: str = "") -> bool:
        return self.fs.get_file_info(self._at(name)).type != pafs.FileType.NotFound

    def is_file(self, name: str) -> bool:
        return self.fs.get_file_info(self._at(name)).type == pafs.FileType.File

    def size(self, name: str) -> int:
        return self.fs.get_file_info(self._at(name)).size

    def glob(self, pattern: str, folder: str = "") -> list[str]:
        """Names (relative to this folder) of the files directly in `folder` matching the
        pattern, sorted; none when the folder does not exist."""
        selector = pafs.FileSelector(self._at(folder), allow_not_found=True)
        names = [info.base_name for info in self.fs.get_file_info(selector)
                 if info.type == pafs.FileType.File]
        return sorted(posixpath.join(folder, n) if folder else n
                      for n in names if fnmatch.fnmatchcase(n, pattern))

    def files(self) -> list[str]:
        """Names (relative to this folder, "a/b") of every file under it at any depth,
        sorted; none when the folder does not exist."""
        selector = pafs.FileSelector(self.path, recursive=True, allow_not_found=True)
        return sorted(posixpath.relpath(info.path, self.path)
                      for info in self.fs.get_file_info(selector)
                      if info.type == pafs.FileType.File)

    def is_folder(self) -> bool:
        return self.fs.get_file_info(self.path).type == pafs.FileType.Directory

    def subfolders(self, pattern: str = "*") -> list[str]:
        """Names of the folders directly in this one matching the pattern, sorted."""
        selector = pafs.FileSelector(self.path, allow_not_found=True)
        return sorted(info.base_name for info in self.fs.get_file_info(selector)
                      if info.type == pafs.FileType.Directory
                      and fnmatch.fnmatchcase(info.base_name, pattern))

    def read_bytes(self, name: str) -> bytes:
        with self.fs.open_input_stream(self._at(name)) as stream:
            return stream.read()

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode()

    def download(self, name: str, target: Path) -> None:
        """Copy file `name` to the local path `target`, streamed."""
        pafs.copy_files(self._at(name), str(target), source_filesystem=self.fs,
                        destination_filesystem=pafs.LocalFileSystem())

    def open_input(self, name: str) -> pa.NativeFile:
        """A random-access file (what Parquet readers need)."""
        return self.fs.open_input_file(self._at(name))

    @contextmanager
    def open_output(self, name: str) -> Iterator[pa.NativeFile]:
        """A stream whose content becomes file `name` only if the block succeeds."""
        target = self._at(name)
        self.fs.create_dir(posixpath.dirname(target), recursive=True)
        if not self.is_local:  # one object, complete when the stream closes without error
            stream = self.fs.open_output_stream(target)
            try:
                yield stream
            except BaseException:
                stream.abort() if hasattr(stream, "abort") else None
                raise
            stream.close()
            return
        temporary = posixpath.join(posixpath.dirname(target),
                                   f".{posixpath.basename(target)}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            with self.fs.open_output_stream(temporary) as stream:
                yield stream
            self.fs.move(temporary, target)
        finally:
            if self.fs.get_file_info(temporary).type != pafs.FileType.NotFound:
                self.fs.delete_file(temporary)

    def write_bytes(self, name: str, data: bytes) -> None:
        with self.open_output(name) as stream:
            stream.write(data)

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes(name, text.encode())

    def delete(self, name: str) -> None:
        if self.exists(name):
            self.fs.delete_file(self._at(name))

    def delete_folder(self, name: str) -> None:
        if self.exists(name):
            self.fs.delete_dir(self._at(name))

    def local_path(self, name: str = "") -> Path:
        """The local file system path of a file (local folders only)."""
        if not self.is_local:
            raise ValueError(f"{self.uri} is not a local folder")
        return Path(self._at(name))
