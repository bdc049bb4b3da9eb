"""Leaks from two functions, for tests/suite/runtime_python.rs: `read_setting` opens a file it
never closes (called from a generator, whose frame lives in its object, not on the thread's
frame stack), `dial` makes a socket whose connect fails and keeps it (called from a method, in a
second thread). Each runs often enough for CPython to specialise the calls on the way (the
interpreter's generic and specialised paths). The lines marked `# LEAK name` are the ones the
test expects each stack to name.

LEAK_MODE=gil: the files are opened by libc's `open` called through `ctypes.PyDLL`, which keeps
the GIL held (the io module releases it), as a C extension may. LEAK_MODE=exit: the fds are
left open at exit (os.open, and sockets detached from their objects: the interpreter closes
file and socket objects as it finalizes), without a checkpoint.

Prints "CHECKPOINT leaked" with everything open and waits for a line on stdin."""
import ctypes
import os
import socket
import sys
import threading

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100
held = []

MODE = os.environ.get("LEAK_MODE", "")
if MODE == "gil":
    LIBC = ctypes.PyDLL(None)

    def open_file(path):
        return LIBC.open(path.encode(), os.O_RDONLY)
elif MODE == "exit":
    def open_file(path):
        return os.open(path, os.O_RDONLY)
else:
    open_file = open


def read_setting(path):
    f = open_file(path)  # LEAK read_setting
    held.append(f)


def dial(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # LEAK dial
    try:
        s.connect(("127.0.0.1", port))
    except OSError:
        pass
    held.append(s.detach() if MODE == "exit" else s)


def settings(n):
    for _ in range(n):
        yield read_setting("/etc/hostname")


class Shipper:
    def __init__(self, port):
        self.port = port

    def ship(self, n):
        for _ in range(n):
            dial(self.port)


def closed_port():
    """A loopback port nothing listens on: connects to it fail at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    port = closed_port()
    for _ in settings(N):
        pass
    worker = threading.Thread(target=Shipper(port).ship, args=(N,))
    worker.start()
    worker.join()
    if MODE != "exit":
        print("CHECKPOINT leaked", flush=True)
        sys.stdin.readline()


main()
