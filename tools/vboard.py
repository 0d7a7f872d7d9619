#!/usr/bin/env python3
"""Virtual board: the MicroPython Unix port behind a pseudo-terminal.

mpremote (and anything else that talks to a serial REPL) can drive it like a
real ESP32/RP2040 on /dev/ttyUSB0:

    python tools/vboard.py            # prints /dev/pts/N, serves until Ctrl-C
    mpremote connect /dev/pts/N resume exec "print(1)"

How it works (and why it is more than `micropython` on a pty):

* The host side is pty A; mpremote opens its slave (/dev/pts/N). A proxy
  thread owns the master. MicroPython runs on a second pty B (its
  controlling terminal, so it gets SIGHUP if the proxy dies).
* A board's UART IRQ turns a Ctrl-C byte into KeyboardInterrupt at any time.
  The Unix port cannot: its raw-paste REPL (what mpremote uses) runs code
  with the tty still raw, so ^C is just a byte nobody reads. The proxy looks
  at what the interpreter is blocked on (/proc/PID/syscall): while it waits
  for stdin (REPL prompt, input(), a poll on fd 0) bytes go straight
  through; while it runs code, ^C becomes SIGINT and other bytes wait. They
  must: the Unix port flushes unread input (TCSAFLUSH) on every tty mode
  switch, so bytes sent early, like mpremote's Ctrl-A after its Ctrl-C,
  would be lost.
* The Unix port exits where a board soft-resets (Ctrl-D in the REPL,
  sys.exit, machine.soft_reset). The proxy prints "MPY: soft reboot" and
  starts a fresh interpreter, re-entering the raw REPL when it was in it, so
  plain `mpremote` (without `resume`) and `mpremote soft-reset` work too.
  machine.reset() (`mpremote reset`) and VirtualBoard.reset() power-cycle:
  a fresh interpreter that runs boot.py and main.py.
* A bootstrap script remounts "/" onto the board directory (os.VfsPosix), so
  "/lib", "/main.py" and "/settings.json" mean what they mean on a board, then
  runs boot.py (and main.py unless rebooting into the raw REPL) like a board
  does.
* Output is rewritten "\\n" -> "\\r\\n" like a board's cooked stdout. While no
  host has the port open, output is dropped (a board does not buffer it
  either), so a stale prompt can never confuse the next mpremote.
"""

import argparse
import errno
import fcntl
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import tty
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MICROPYTHON = REPO / ".venv" / "bin" / "micropython"
# Same knob as tests/support/harness.py; "128wK" would scale with word size.
DEFAULT_HEAP = os.environ.get("MPY_HEAP", "128K")

# Runs inside MicroPython before the REPL starts. Kept tiny: it lives in the
# board heap until gc.collect() at the end.
_BOOTSTRAP = r"""
import os, sys, gc
import machine  # the extended one next to this script (machine.reset)
def _vb_boot():
    root = os.getenv("VBOARD_ROOT")
    sys.path[0] = ""  # running a script put its host dir there; a board has ""
    try:
        os.umount("/")
        os.mount(os.VfsPosix(root), "/")
        os.chdir("/")
    except Exception as e:
        # Old ports without VfsPosix(root): stay on the host fs, cwd is root.
        print("vboard: cannot remount /:", e)
        sys.path[:] = [root + p if p.startswith("/") else p for p in sys.path]
    names = ("boot.py",) if os.getenv("VBOARD_MODE") == "raw" else ("boot.py", "main.py")
    for n in names:
        try:
            os.stat(n)
        except OSError:
            continue
        try:
            with open(n) as f:
                src = f.read()
            exec(compile(src, n, "exec"), globals())
        except BaseException as e:  # Ctrl-C from the host lands here, as on a board
            sys.print_exception(e)
_vb_boot()
del _vb_boot
gc.collect()
"""

# The Unix port's machine has no reset(); `machine` is an extensible module,
# so this file (imported before "/" is remounted) adds one. The exit status
# tells the proxy to power-cycle rather than soft-reboot.
_HARD_RESET_RC = 173
_MACHINE = r"""
from umachine import *


def reset():
    import sys
    sys.exit(%d)
""" % _HARD_RESET_RC

_SOFT_REBOOT = b"MPY: soft reboot\r\n"
_RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
_OUT_BACKLOG_MAX = 256 * 1024  # host is connected but slow: keep this much
_CONSOLE_MAX = 256 * 1024  # in-memory console history for test diagnostics
_HOLD_RELEASE_S = 2.0  # held input goes through anyway after this long
# Syscall numbers as /proc/PID/syscall reports them, per host architecture.
_SYSCALLS = {
    "x86_64": {"read": 0, "poll": 7, "select": 23, "pselect6": 270, "ppoll": 271},
    "aarch64": {"read": 63, "pselect6": 72, "ppoll": 73},
    "riscv64": {"read": 63, "pselect6": 72, "ppoll": 73},
}.get(os.uname().machine)


def _peek(pid, addr, n):
    # Reading a child's memory is allowed to its parent (ptrace rules).
    with open("/proc/%d/mem" % pid, "rb", buffering=0) as f:
        return os.pread(f.fileno(), n, addr)


def _set_child_termios(fd):
    # Becomes the Unix port's "original" mode while code runs: bytes pass
    # as-is, but Ctrl-C still raises SIGINT.
    attrs = termios.tcgetattr(fd)
    attrs[0] = 0  # iflag: no CR/NL mangling, no flow control
    attrs[1] = 0  # oflag: no "\n" -> "\r\n"; the proxy does that once
    attrs[2] = (attrs[2] & ~(termios.CSIZE | termios.PARENB)) | termios.CS8 | termios.CREAD
    attrs[3] = termios.ISIG
    attrs[6][termios.VMIN] = 1
    attrs[6][termios.VTIME] = 0
    attrs[6][termios.VINTR] = b"\x03"
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


class VirtualBoard:
    """Context manager; `.device` is the pty path for mpremote, `.fs_root` the
    host directory that is the board's "/"."""

    def __init__(self, fs_root=None, heap=DEFAULT_HEAP, micropython=None, keep_fs=False,
                 env=None):
        self.heap = heap
        self.micropython = str(micropython or DEFAULT_MICROPYTHON)
        self._own_fs = fs_root is None
        self.keep_fs = keep_fs
        self.fs_root = Path(fs_root) if fs_root else None
        self.extra_env = dict(env or {})
        self.device = None
        self.boots = 0  # interpreter starts: power-on, soft reboots, resets
        self.console = bytearray()  # what the board printed (last 256K)
        self.console_total = 0  # bytes ever added to console
        self._state_dir = None
        self._master_a = None
        self._master_b = None
        self._proc = None
        self._thread = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._inbuf = bytearray()
        self._held_since = None
        self._outbuf = bytearray()
        self._connected = False
        self._raw_mode = False
        self._last_out = b""
        self._error = None
        self._hard_reset = False
        self._boot_hold = None  # child output held while rebooting into raw REPL
        self._boot_hold_since = 0.0

    # -- lifecycle ---------------------------------------------------------

    def start(self):
        if not os.path.exists(self.micropython):
            raise FileNotFoundError("micropython not found at %s (run `make setup`)" % self.micropython)
        self._state_dir = Path(tempfile.mkdtemp(prefix="vboard-"))
        if self.fs_root is None:
            self.fs_root = self._state_dir / "fs"
        self.fs_root.mkdir(parents=True, exist_ok=True)
        (self._state_dir / "vboard_boot.py").write_text(_BOOTSTRAP)
        (self._state_dir / "machine.py").write_text(_MACHINE)

        self._master_a, slave_a = pty.openpty()
        # Raw before anyone writes: with ECHO on, our own output would bounce
        # back from the slave into the master and be fed to the board.
        tty.setraw(slave_a)
        self.device = os.ttyname(slave_a)
        # Closing our slave fd lets POLLHUP on the master tell us whether a
        # host has the port open.
        os.close(slave_a)
        os.set_blocking(self._master_a, False)

        self._spawn(raw=False)
        self._thread = threading.Thread(target=self._run, name="vboard-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self._kill_child()
        for fd in (self._master_a, self._master_b):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master_a = self._master_b = None
        # The state dir holds the bootstrap, and the board fs unless one was given.
        if self._state_dir and not (self._own_fs and self.keep_fs):
            shutil.rmtree(self._state_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def console_text(self):
        return bytes(self.console).decode("utf-8", "replace")

    @property
    def alive(self):
        return self._thread is not None and self._thread.is_alive()

    # -- child -------------------------------------------------------------

    def _spawn(self, raw):
        master_b, slave_b = pty.openpty()
        _set_child_termios(slave_b)
        env = dict(os.environ)
        env.update(self.extra_env)
        env.update(
            MICROPYPATH=":.frozen:/lib",
            VBOARD_ROOT=str(self.fs_root),
            VBOARD_MODE="raw" if raw else "friendly",
        )

        def ctty():
            # Own session with pty B as controlling tty: SIGHUP when we go away,
            # and SIGINT to the whole group from os.killpg.
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self._proc = subprocess.Popen(
            [self.micropython, "-X", "heapsize=" + self.heap, "-i",
             str(self._state_dir / "vboard_boot.py")],
            stdin=slave_b, stdout=slave_b, stderr=slave_b, cwd=str(self.fs_root), env=env,
            preexec_fn=ctty, close_fds=True,
        )
        os.close(slave_b)  # so reading master_b fails (EIO) once the child is gone
        os.set_blocking(master_b, False)
        self._master_b = master_b
        self._raw_mode = raw
        self.boots += 1
        if raw:
            # Back into the raw REPL once the fresh REPL is reading, and hide
            # the friendly banner and ">>> " meanwhile: mpremote takes any ">"
            # for the raw prompt.
            with self._lock:
                self._inbuf[0:0] = b"\x01"
                self._held_since = self._held_since or time.monotonic()
            self._boot_hold = bytearray()
            self._boot_hold_since = time.monotonic()

    def _kill_child(self):
        p = self._proc
        if p and p.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    p.wait(2)
                    break
                except subprocess.TimeoutExpired:
                    continue

    def reset(self):
        """Hard reset (power cycle): boot.py and main.py run again; the host
        connection and the filesystem survive, as with a board's reset button."""
        self._hard_reset = True
        self._kill_child()

    def _on_child_exit(self):
        # The interpreter exited where a board would soft-reset, or it was
        # machine.reset() / reset().
        try:
            rc = self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._kill_child()
            rc = self._proc.returncode
        os.close(self._master_b)
        self._master_b = None
        if self._boot_hold is not None:  # died while rebooting: show why
            self._emit(bytes(self._boot_hold))
            self._boot_hold = None
        if self._hard_reset or rc == _HARD_RESET_RC:
            self._hard_reset = False
            with self._lock:
                self._inbuf.clear()  # a board's UART FIFO does not survive reset
                self._held_since = None
            self._spawn(raw=False)
        else:
            self._emit(_SOFT_REBOOT)
            self._spawn(raw=self._raw_mode)

    def _child_waits_for_input(self):
        """True when the interpreter is blocked waiting for stdin (REPL prompt,
        input(), a poll/select on fd 0 such as `mpremote mount`'s hook), False
        while it runs other code, None when this host cannot tell."""
        if _SYSCALLS is None:
            return None
        pid = self._proc.pid
        try:
            with open("/proc/%d/syscall" % pid) as f:
                parts = f.read().split()
            if not parts or parts[0] == "running":
                return False
            nr, args = int(parts[0]), [int(x, 16) for x in parts[1:7]]
            if nr == _SYSCALLS.get("read"):
                return args[0] == 0
            if nr in (_SYSCALLS.get("poll"), _SYSCALLS.get("ppoll")):
                nfds = min(args[1], 64)
                raw = _peek(pid, args[0], 8 * nfds)
                return any(fd == 0 and ev & select.POLLIN
                           for fd, ev, _ in struct.iter_unpack("ihh", raw))
            if nr in (_SYSCALLS.get("select"), _SYSCALLS.get("pselect6")):
                return args[0] > 0 and args[1] != 0 and bool(_peek(pid, args[1], 1)[0] & 1)
            return False
        except (OSError, ValueError, IndexError, struct.error):
            return None

    # -- proxy ---------------------------------------------------------------

    def _emit(self, data):
        """Board output -> console history and (if connected) the host."""
        if not data:
            return
        out = bytearray()
        start = 0
        while True:
            i = data.find(b"\n", start)
            if i < 0:
                out += data[start:]
                break
            before = data[i - 1 : i] if i else self._last_out
            out += data[start:i]
            out += b"\n" if before == b"\r" else b"\r\n"
            start = i + 1
        self._last_out = data[-1:]
        self.console += out
        self.console_total += len(out)
        if len(self.console) > _CONSOLE_MAX:
            del self.console[: len(self.console) - _CONSOLE_MAX]
        if self._connected:
            self._outbuf += out
            if len(self._outbuf) > _OUT_BACKLOG_MAX:
                del self._outbuf[: len(self._outbuf) - _OUT_BACKLOG_MAX]

    def _child_output(self, data):
        if self._boot_hold is None:
            self._emit(data)
            return
        held = self._boot_hold
        held += data
        j = held.find(_RAW_BANNER)
        if j >= 0:
            # Keep boot.py's output, drop "MicroPython ...\r\n>>> \r\n".
            prompt = held.rfind(b">>> ", 0, j)
            banner = held.rfind(b"MicroPython ", 0, prompt) if prompt >= 0 else -1
            self._boot_hold = None
            self._emit(bytes(held[:banner] + held[j:]) if banner >= 0 else bytes(held))
        elif len(held) > 65536 or time.monotonic() - self._boot_hold_since > 30:
            self._boot_hold = None  # never got there: show everything
            self._emit(bytes(held))

    def _host_connected(self):
        p = select.poll()
        p.register(self._master_a, select.POLLIN)
        return not any(ev & select.POLLHUP for _, ev in p.poll(0))

    def _deliver_input(self):
        with self._lock:
            if not self._inbuf or self._master_b is None:
                return
            waiting = self._child_waits_for_input()
            if waiting is None:
                # No /proc: fall back to the Unix port's REPL turning ISIG off.
                try:
                    waiting = not (termios.tcgetattr(self._master_b)[3] & termios.ISIG)
                except termios.error:
                    waiting = False
            interrupt = False
            if waiting or (
                self._held_since and time.monotonic() - self._held_since > _HOLD_RELEASE_S
            ):
                data = bytes(self._inbuf)
                self._inbuf.clear()
            elif b"\x03" in self._inbuf:
                # Code is running and does not read stdin (the raw-paste REPL even
                # keeps the tty raw, so no line discipline turns ^C into SIGINT):
                # interrupt it the way a board's UART IRQ does.
                self._inbuf[:] = self._inbuf.replace(b"\x03", b"")
                data = b""
                interrupt = True
            else:
                return
            self._held_since = time.monotonic() if self._inbuf else None
        if interrupt:
            try:
                os.killpg(self._proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            return
        try:
            os.write(self._master_b, data)
        except OSError:
            return
        # Remember raw vs friendly REPL so a soft reboot comes back the same.
        i1, i2 = data.rfind(b"\x01"), data.rfind(b"\x02")
        if i1 != i2:
            self._raw_mode = i1 > i2

    def _run(self):
        try:
            self._loop()
        except Exception as e:  # keep the failure visible to tests
            self._error = e
            raise

    def _loop(self):
        while not self._stop.is_set():
            connected = self._host_connected()
            if connected != self._connected:
                self._connected = connected
                self._outbuf.clear()
            poller = select.poll()
            if self._master_b is not None:
                poller.register(self._master_b, select.POLLIN)
            if connected:
                poller.register(
                    self._master_a, select.POLLIN | (select.POLLOUT if self._outbuf else 0)
                )
            timeout = 10 if self._inbuf else 50
            for fd, ev in poller.poll(timeout):
                if fd == self._master_b:
                    try:
                        data = os.read(fd, 4096)
                    except OSError as e:
                        if e.errno not in (errno.EIO, errno.EAGAIN):
                            raise
                        data = b"" if e.errno == errno.EIO else None
                    if data:
                        self._child_output(data)
                    elif data == b"" or ev & select.POLLHUP:
                        self._on_child_exit()
                elif fd == self._master_a:
                    if ev & select.POLLIN:
                        try:
                            data = os.read(fd, 4096)
                        except OSError:
                            data = b""
                        if data:
                            with self._lock:
                                if not self._inbuf:
                                    self._held_since = time.monotonic()
                                self._inbuf += data
                    if ev & select.POLLOUT and self._outbuf:
                        try:
                            n = os.write(fd, self._outbuf)
                            del self._outbuf[:n]
                        except BlockingIOError:
                            pass
                        except OSError:
                            self._outbuf.clear()
            if self._master_b is not None and self._proc.poll() is not None:
                # Drain what the child printed last before rebooting.
                try:
                    while True:
                        data = os.read(self._master_b, 4096)
                        if not data:
                            break
                        self._child_output(data)
                except OSError:
                    pass
                self._on_child_exit()
            self._deliver_input()


def _raise_interrupt(*_):
    raise KeyboardInterrupt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fs", help="board filesystem directory (default: a temporary one)")
    ap.add_argument("--heap", default=DEFAULT_HEAP, help="MicroPython heap (default %(default)s)")
    ap.add_argument("--micropython", default=str(DEFAULT_MICROPYTHON))
    ap.add_argument("--console", action="store_true", help="also echo board output to stderr")
    ap.add_argument("--keep", action="store_true", help="keep the temporary fs root at exit")
    args = ap.parse_args()
    # A shell's `cmd &` starts us with SIGINT ignored; make Ctrl-C and kill
    # both run the cleanup below.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    vb = VirtualBoard(fs_root=args.fs, heap=args.heap, micropython=args.micropython,
                      keep_fs=args.keep)
    vb.start()
    print(vb.device, flush=True)
    print("vboard: fs root %s; Ctrl-C to stop" % vb.fs_root, file=sys.stderr, flush=True)
    shown = 0
    try:
        while vb.alive:
            time.sleep(0.2)
            new = vb.console_total - shown
            if args.console and new:
                sys.stderr.buffer.write(bytes(vb.console[-min(new, len(vb.console)):]))
                sys.stderr.flush()
                shown = vb.console_total
    except KeyboardInterrupt:
        pass
    finally:
        vb.stop()
    return 1 if vb._error else 0


if __name__ == "__main__":
    sys.exit(main())
