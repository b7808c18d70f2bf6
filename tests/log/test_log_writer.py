"""Writers against real files, pipes and processes: whole lines, buffering, drops, failures."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from kitobs import log
from kitobs.errors import ConfigError
from kitobs.log import writer

THREADS, LINES = 8, 10_000


class Counter:
    """Stands in for a metrics Counter child: add() as kitobs.metrics counters have."""

    def __init__(self) -> None:
        self.total = 0.0
        self._lock = threading.Lock()

    def add(self, delta: float) -> None:
        with self._lock:
            self.total += delta


@pytest.mark.parametrize("mode", ["sync", "buffered", "nonblocking"])
def test_threads_write_whole_uninterleaved_lines(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "app.log"
    logger = log.new(
        str(path),
        buffered=mode == "buffered",
        nonblocking=mode == "nonblocking",
        queue_size=THREADS * LINES,
    )
    padding = "x" * 200  # long lines make torn writes likely if writes were not whole

    def work(thread: int) -> None:
        child = logger.with_("thread", thread)
        for i in range(LINES):
            child.info("i", i, "pad", padding)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    logger.close()
    data = path.read_bytes()
    assert data.endswith(b"\n")
    lines = data.decode().split("\n")[:-1]
    assert len(lines) == THREADS * LINES
    pattern = re.compile(r"ts=\S+Z level=info thread=(\d) i=(\d+) pad=x{200}")
    seen = set()
    for line in lines:
        match = pattern.fullmatch(line)
        assert match, line
        seen.add((int(match[1]), int(match[2])))
    assert seen == {(t, i) for t in range(THREADS) for i in range(LINES)}


def test_file_output_appends(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("existing\n")
    logger = log.new(str(path), time_format="none")
    logger.info("msg", "new")
    logger.close()
    assert path.read_text() == "existing\nlevel=info msg=new\n"


def test_unopenable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"log\.output: cannot open the log file"):
        log.new(str(tmp_path / "missing-dir" / "app.log"))
    with pytest.raises(ConfigError, match=r"log\.output"):
        log.new("")


def test_buffered_output_waits_for_flush(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    logger = log.new(str(path), buffered=True, time_format="none")
    logger.info("msg", "held")
    assert path.read_bytes() == b""
    logger.flush()
    assert path.read_text() == "level=info msg=held\n"
    logger.info("msg", "on close")
    logger.close()
    assert path.read_text().splitlines() == ["level=info msg=held", 'level=info msg="on close"']


def test_buffered_output_is_written_at_exit(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    script = (
        "from kitobs import log\n"
        f"logger = log.new({str(path)!r}, buffered=True, time_format='none')\n"
        "logger.info('msg', 'bye')\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert path.read_text() == "level=info msg=bye\n"


def test_buffered_writer_writes_full_blocks_of_whole_lines() -> None:
    lines: list[bytes] = []
    sink = writer.BufferedWriter(_Blocks(lines), size=25)
    for i in range(10):
        sink.write(b"line %d\n" % i)
    sink.close()
    assert all(block.endswith(b"\n") for block in lines)
    assert b"".join(lines) == b"".join(b"line %d\n" % i for i in range(10))
    assert len(lines) < 10  # blocks, not lines


class _Blocks:
    def __init__(self, blocks: list[bytes]) -> None:
        self.blocks = blocks

    def write(self, data: bytes) -> None:
        self.blocks.append(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_nonblocking_writer_never_blocks_on_a_dead_reader_and_counts_drops() -> None:
    read_fd, write_fd = os.pipe()
    errors: list[BaseException] = []
    counter = Counter()
    try:
        # Nobody reads the pipe: once its buffer is full the writer thread blocks in write().
        sink = writer.NonBlockingWriter(
            writer.FileWriter(write_fd, owned=True, on_error=errors.append),
            queue_size=10,
            dropped=counter,
            on_error=errors.append,
            timeout=0.5,
        )
        logger = log.new(sink, time_format="none")
        payload = "p" * 4096
        for i in range(2000):  # 8 MB, far more than a pipe holds
            logger.info("i", i, "payload", payload)
        assert sink.dropped > 0
        assert counter.total == sink.dropped
    finally:
        os.close(read_fd)  # the blocked write now fails with EPIPE and the thread moves on
    sink.close()
    assert any(isinstance(e, BrokenPipeError) for e in errors)


def test_nonblocking_writer_delivers_on_flush_and_close(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    logger = log.new(str(path), nonblocking=True, time_format="none")
    logger.info("n", 1)
    logger.flush()
    assert path.read_text() == "level=info n=1\n"
    logger.info("n", 2)
    logger.close()
    logger.info("n", 3)  # after close: dropped, no exception
    assert path.read_text() == "level=info n=1\nlevel=info n=2\n"


def test_closed_writer_goes_to_the_error_handler(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    logger = log.new(str(tmp_path / "a.log"), on_error=errors.append)
    logger.close()
    logger.info("msg", "late")
    assert len(errors) == 1
    assert "closed" in str(errors[0])


def test_failing_device_goes_to_the_error_handler() -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    errors: list[BaseException] = []
    sink = writer.FileWriter(os.open("/dev/full", os.O_WRONLY), owned=True, on_error=errors.append)
    logger = log.new(sink)
    logger.info("msg", "disk full")
    logger.error("msg", "again")
    logger.close()
    assert sink.dropped == 2
    assert [getattr(e, "errno", None) for e in errors] == [28, 28]  # ENOSPC


def test_a_raising_writer_never_reaches_the_caller() -> None:
    class Broken:
        def write(self, data: bytes) -> None:
            raise OSError("gone")

        def flush(self) -> None:
            raise OSError("gone")

        def close(self) -> None:
            raise OSError("gone")

    errors: list[BaseException] = []
    logger = log.new(Broken(), on_error=errors.append)
    logger.info("msg", "x")
    logger.flush()
    logger.close()
    assert [str(e) for e in errors] == ["gone"] * 3


def test_default_error_handler_reports_once(capfd: pytest.CaptureFixture[str]) -> None:
    handler = writer.report_once(lambda: sys.stderr)
    handler(OSError("first"))
    handler(OSError("second"))
    err = capfd.readouterr().err
    assert err == "kitobs.log: cannot write log lines: OSError('first')\n"


def test_stream_writer_text_and_bytes() -> None:
    text, binary = io.StringIO(), io.BytesIO()
    log.new(text, time_format="none").info("a", "é")
    log.new(binary, time_format="none").info("a", "é")
    closed = writer.StreamWriter(io.StringIO(), on_error=lambda e: None)
    closed.close()
    closed.write(b"x\n")
    assert text.getvalue() == "level=info a=é\n"
    assert binary.getvalue() == "level=info a=é\n".encode()
    assert closed.dropped == 1


def test_stdout_goes_to_file_descriptor_1(capfd: pytest.CaptureFixture[str]) -> None:
    log.new("stdout", time_format="none").warn("msg", "fd")
    assert capfd.readouterr().out == "level=warn msg=fd\n"


def _in_child(work: Callable[[], None]) -> int:
    """Run *work* in a forked child (exit code 0 if it returned) and return that exit code."""
    pid = os.fork()
    if pid == 0:  # the child: leave without running pytest's teardown
        code = 1
        try:
            work()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.filterwarnings("ignore:.*multi-threaded.*:DeprecationWarning")  # 3.12+: we mean it
def test_forked_child_of_a_nonblocking_logger_writes_its_own_lines(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    logger = log.new(str(path), format="logfmt", time_format="none", nonblocking=True)
    logger.info("who", "parent-before")

    def child() -> None:
        logger.info("who", "child")
        logger.flush()  # waits for the child's own writer thread

    assert _in_child(child) == 0
    logger.info("who", "parent-after")
    logger.close()
    lines = sorted(path.read_text().splitlines())
    # Each line once: the child neither lost its line nor wrote the parent's queued one.
    assert lines == [
        "level=info who=child",
        "level=info who=parent-after",
        "level=info who=parent-before",
    ]


@pytest.mark.filterwarnings("ignore:.*multi-threaded.*:DeprecationWarning")
def test_forked_child_of_a_buffered_logger_does_not_repeat_the_parents_lines(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.log"
    logger = log.new(str(path), format="logfmt", time_format="none", buffered=True)
    logger.info("who", "parent-before")  # buffered, not written yet

    def child() -> None:
        logger.info("who", "child")
        logger.flush()

    assert _in_child(child) == 0
    logger.close()
    lines = sorted(path.read_text().splitlines())
    assert lines == ["level=info who=child", "level=info who=parent-before"]


@pytest.mark.parametrize(
    ("how", "value", "stream"),
    [
        pytest.param("config", "STDERR", "stderr", id="config-upper"),
        pytest.param("config", " Stdout ", "stdout", id="config-blanks"),
        pytest.param("new", "StdErr", "stderr", id="new-mixed"),
    ],
)
def test_stream_names_ignore_case(tmp_path: Path, how: str, value: str, stream: str) -> None:
    # A subprocess: the streams are the process's real file descriptors.
    if how == "config":
        build = "from kitobs.config import load; logger = log.from_settings(load(search=False).log)"
    else:
        build = f"logger = log.new({value!r})"
    script = (
        f"from kitobs import log\n{build}\nlogger.info('msg', 'to the stream')\nlogger.close()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "KITOBS_LOG_OUTPUT": value},
        timeout=60,
        check=True,
    )
    written = proc.stderr if stream == "stderr" else proc.stdout
    assert 'msg="to the stream"' in written
    assert list(tmp_path.iterdir()) == []  # no file named after the stream


def test_a_file_named_like_a_stream_is_written_with_a_path(tmp_path: Path) -> None:
    path = tmp_path / "stderr"
    logger = log.new(str(path), time_format="none")
    logger.info("msg", "to the file")
    logger.close()
    assert path.read_text() == 'level=info msg="to the file"\n'
