"""MCP server with read_file, write_file, list_directory and file_info, confined to one workspace folder.

Every path is checked twice: its text first (relative, no `..`, no `%` escapes, no NUL or other control
characters), then where it really leads (`Path.resolve()` follows every symbolic link, and the result must
stay inside the workspace). The file is then opened one folder at a time from the workspace root with
O_NOFOLLOW, so a link swapped in after the check is refused too.

    python -m services.mcp.filesystem --root DIR --port 18087   # endpoint http://127.0.0.1:18087/mcp
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from services.mcp import http_app

DEFAULT_MAX_WRITE_BYTES = 1_000_000  # 1 MB
MAX_PATH_CHARS = 1024
MAX_LIST_ENTRIES = 1000
ALLOWED = ("Allowed: a relative path inside the workspace with '/' between names, e.g. 'notes/today.md'; "
           "no absolute paths, '..', '~', '%' escapes, backslashes, NUL or control characters, "
           "and no symbolic links that lead out of the workspace.")
PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
PATH_FIELD = Field(description="a relative path inside the workspace, e.g. 'notes/today.md'")


class PathRejected(ToolError):
    """A path that is not a plain relative path inside the workspace; the message says what is allowed."""


class FileInfo(BaseModel):
    """What file_info reports."""

    path: str
    type: str = Field(description="file, directory, or other")
    size: int = Field(description="bytes")
    modified: str = Field(description="last modification, ISO 8601 UTC")


class DirectoryEntry(BaseModel):
    """One entry of a folder."""

    name: str
    type: str = Field(description="file, directory, symlink, or other")
    size: int | None = Field(default=None, description="bytes, for files")


class DirectoryListing(BaseModel):
    """What list_directory returns."""

    path: str
    entries: list[DirectoryEntry]
    truncated: bool = Field(description=f"true when the folder holds more than {MAX_LIST_ENTRIES} entries")


class WriteResult(BaseModel):
    """What write_file returns."""

    path: str
    bytes_written: int


def _shown(path: object) -> str:
    text = repr(path)
    return text if len(text) <= 120 else text[:117] + "..."


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


class Workspace:
    """One folder that the filesystem tools may touch, and nothing outside it."""

    def __init__(self, root: Path | str, max_write_bytes: int = DEFAULT_MAX_WRITE_BYTES) -> None:
        if max_write_bytes < 1:
            raise ValueError(f"max_write_bytes must be at least 1, not {max_write_bytes}")
        folder = Path(root)
        folder.mkdir(parents=True, exist_ok=True)
        self.root = folder.resolve(strict=True)
        self.max_write_bytes = max_write_bytes

    # ------------------------------------------------------------ checks

    def reject(self, path: object, reason: str) -> PathRejected:
        """The error for a refused path: the path, why, and what is allowed."""
        return PathRejected(f"Rejected path {_shown(path)}: {reason}. {ALLOWED}")

    def check_text(self, path: str) -> PurePosixPath:
        """The path as a relative POSIX path, after the checks that need no disk access."""
        if not isinstance(path, str):
            raise self.reject(path, "a path must be a string")
        if "\x00" in path:
            raise self.reject(path, "it contains a NUL byte")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
            raise self.reject(path, "it contains control characters")
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            raise self.reject(path, "it is not valid Unicode text (a lone surrogate)") from None
        if len(path) > MAX_PATH_CHARS:
            raise self.reject(path, f"it is longer than {MAX_PATH_CHARS} characters")
        if PERCENT_ESCAPE.search(path):
            raise self.reject(path, "it contains percent-encoded characters such as %2e or %2f, which are not "
                                    "decoded here; write the path plainly")
        if "\\" in path:
            raise self.reject(path, "it contains a backslash; use '/' between names")
        if not path.strip():
            raise self.reject(path, "it is empty")
        if path.startswith("/"):
            raise self.reject(path, "it is an absolute path")
        if path.startswith("~"):
            raise self.reject(path, "'~' (a home folder) is outside the workspace")
        relative = PurePosixPath(path)
        if ".." in relative.parts:
            raise self.reject(path, "'..' (the parent folder) is not allowed")
        return relative

    def resolve(self, path: str) -> PurePosixPath:
        """Where the path really leads (every symbolic link followed), relative to the workspace root."""
        relative = self.check_text(path)
        try:
            target = (self.root / relative).resolve()
        except (RuntimeError, OSError):  # a loop of symbolic links
            raise self.reject(path, "it goes through a loop of symbolic links") from None
        if not target.is_relative_to(self.root):
            raise self.reject(path, "it leads outside the workspace through a symbolic link")
        return PurePosixPath(target.relative_to(self.root).as_posix())

    @contextmanager
    def _opened(self, path: str, flags: int, create_parents: bool = False) -> Iterator[int]:
        """A file descriptor for the path, opened folder by folder from the root without following any link."""
        relative = self.resolve(path)
        parts = relative.parts
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name in parts[:-1]:
                try:
                    next_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    if not create_parents:
                        raise
                    os.mkdir(name, 0o755, dir_fd=fd)
                    next_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except NotADirectoryError:  # a file, or a link swapped in after the check (O_NOFOLLOW)
                    if stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                        raise OSError(errno.ELOOP, "symbolic link") from None
                    raise
                os.close(fd)
                fd = next_fd
            if parts:
                leaf = os.open(parts[-1], flags | os.O_NOFOLLOW, 0o644, dir_fd=fd)
                os.close(fd)
                fd = leaf
            yield fd
        except FileNotFoundError:
            raise ToolError(f"No file or folder {_shown(path)} in the workspace. "
                            "Call list_directory to see what exists.") from None
        except NotADirectoryError:
            raise ToolError(f"A part of {_shown(path)} is a file, not a folder.") from None
        except OSError as error:
            if error.errno == errno.ELOOP:  # a link appeared after the check
                raise self.reject(path, "it became a symbolic link while being opened") from None
            raise ToolError(f"Cannot open {_shown(path)}: {error.strerror}.") from None
        finally:
            os.close(fd)

    def _regular(self, path: str, fd: int) -> os.stat_result:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ToolError(f"{_shown(path)} is a folder; call list_directory for its contents.")
        if not stat.S_ISREG(info.st_mode):
            raise ToolError(f"{_shown(path)} is not a regular file.")
        if info.st_nlink > 1:
            raise self.reject(path, "it is a hard-linked file, which may be shared with a file outside the "
                                    "workspace")
        return info

    # ------------------------------------------------------------ operations

    def read_text(self, path: str) -> str:
        """The UTF-8 text of a file (at most max_write_bytes)."""
        with self._opened(path, os.O_RDONLY | os.O_NONBLOCK) as fd:
            info = self._regular(path, fd)
            if info.st_size > self.max_write_bytes:
                raise ToolError(f"{_shown(path)} is {info.st_size:,} bytes; read_file returns files up to "
                                f"{self.max_write_bytes:,} bytes.")
            data = b""
            while chunk := os.read(fd, 1 << 16):
                data += chunk
                if len(data) > self.max_write_bytes:
                    raise ToolError(f"{_shown(path)} grew beyond {self.max_write_bytes:,} bytes while being read.")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ToolError(f"{_shown(path)} is not UTF-8 text; read_file returns text files only.") from None

    def write_text(self, path: str, content: str) -> WriteResult:
        """Create or replace a text file (parent folders are created); refuses content over max_write_bytes."""
        relative = self.resolve(path)
        if not relative.parts:
            raise self.reject(path, "it names the workspace folder itself, not a file in it")
        data = content.encode("utf-8")
        if len(data) > self.max_write_bytes:
            raise ToolError(f"Rejected write to {_shown(path)}: the content is {len(data):,} bytes and this "
                            f"workspace accepts files up to {self.max_write_bytes:,} bytes. Write less, or "
                            f"split it into several files.")
        with self._opened(path, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK, create_parents=True) as fd:
            self._regular(path, fd)  # before truncating: never overwrite a folder, a device or a hard link
            os.ftruncate(fd, 0)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        return WriteResult(path=relative.as_posix(), bytes_written=len(data))

    def list_dir(self, path: str = ".") -> DirectoryListing:
        """The entries of a folder, sorted by name (links are listed, not followed)."""
        with self._opened(path, os.O_RDONLY | os.O_DIRECTORY) as fd:
            entries = []
            with os.scandir(fd) as found:
                for entry in found:
                    info = entry.stat(follow_symlinks=False)
                    kind = _kind(info.st_mode)
                    entries.append(DirectoryEntry(name=entry.name, type=kind,
                                                  size=info.st_size if kind == "file" else None))
        entries.sort(key=lambda e: e.name)
        shown = self.resolve(path).as_posix()
        return DirectoryListing(path=shown, entries=entries[:MAX_LIST_ENTRIES],
                                truncated=len(entries) > MAX_LIST_ENTRIES)

    def info(self, path: str) -> FileInfo:
        """Type, size and modification time of a file or folder."""
        with self._opened(path, os.O_RDONLY | os.O_NONBLOCK) as fd:
            st = os.fstat(fd)
        modified = datetime.fromtimestamp(st.st_mtime, tz=timezone.utc).isoformat(timespec="seconds")
        return FileInfo(path=self.resolve(path).as_posix(), type=_kind(st.st_mode), size=st.st_size,
                        modified=modified)


def build_server(root: Path | str, max_write_bytes: int = DEFAULT_MAX_WRITE_BYTES) -> MCPServer:
    """The filesystem MCP server for one workspace folder, with its four tools and GET /health."""
    workspace = Workspace(root, max_write_bytes)
    server = MCPServer(
        "filesystem",
        instructions="Read and write text files in one workspace folder. Paths are relative to the workspace, "
                     "with '/' between names; anything that would leave the workspace is refused.",
    )
    @server.tool()
    def read_file(path: Annotated[str, PATH_FIELD]) -> str:
        """Return the text of a file in the workspace."""
        return workspace.read_text(path)

    @server.tool()
    def write_file(
        path: Annotated[str, PATH_FIELD],
        content: Annotated[str, Field(description="the text to write (the server's size limit applies)")],
    ) -> WriteResult:
        """Create or replace a text file in the workspace (missing folders are created)."""
        return workspace.write_text(path, content)

    @server.tool()
    def list_directory(
        path: Annotated[str, Field(description="a folder inside the workspace; '.' is the workspace itself")] = ".",
    ) -> DirectoryListing:
        """List the files and folders in a workspace folder."""
        return workspace.list_dir(path)

    @server.tool()
    def file_info(path: Annotated[str, PATH_FIELD]) -> FileInfo:
        """Report the type, size and modification time of a file or folder in the workspace."""
        return workspace.info(path)

    def health() -> dict[str, Any]:
        return {"workspace": workspace.root.name, "max_write_bytes": workspace.max_write_bytes}

    http_app.add_health_route(server, health)
    return server


def main(argv: list[str] | None = None) -> int:
    """Command line: serve the filesystem MCP server for --root over streamable HTTP at /mcp."""
    parser = argparse.ArgumentParser(prog="python -m services.mcp.filesystem",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, type=Path, help="the workspace folder (created if missing)")
    http_app.add_serving_arguments(parser)
    parser.add_argument("--max-write-bytes", type=int, default=DEFAULT_MAX_WRITE_BYTES,
                        help="largest file write_file accepts and read_file returns, in bytes "
                             f"(default {DEFAULT_MAX_WRITE_BYTES:,})")
    args = parser.parse_args(argv)
    http_app.configure_logging(args.log_level)
    try:
        server = build_server(args.root, args.max_write_bytes)
    except (OSError, ValueError) as error:
        print(f"error: cannot use --root {args.root}: {error}", file=sys.stderr)
        return 2
    print(f"filesystem MCP server: workspace {args.root} (writes up to {args.max_write_bytes:,} bytes) "
          f"at http://{args.host}:{args.port}{http_app.MCP_PATH}", flush=True)
    # the request body must hold the largest write (JSON-escaped text can be up to 6x its bytes)
    app = http_app.http_app(server, args.host, args.allow_host, max_request_bytes=6 * args.max_write_bytes + 65536)
    http_app.serve(app, args.host, args.port, args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
