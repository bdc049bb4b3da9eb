"""A python3 program using sockets, subprocesses and files; its output is deterministic, so a run
under fdguard must print exactly what a run without it prints (tests/python.rs).

With PY_CHECKPOINT=1 it stops once, with sockets, pipes and files open, printing
"CHECKPOINT python" and waiting for a line on stdin, so the harness can compare fdguard's
report with /proc/PID/fd."""
import os
import socket
import subprocess
import sys
import tempfile
import threading


def echo_server(listener, ready):
    ready.set()
    for _ in range(3):
        conn, _ = listener.accept()
        with conn:
            while True:
                data = conn.recv(1024)
                if not data:
                    break
                conn.sendall(data.upper())


def sockets():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    ready = threading.Event()
    server = threading.Thread(target=echo_server, args=(listener, ready))
    server.start()
    ready.wait()
    port = listener.getsockname()[1]
    for i in range(3):
        with socket.create_connection(("127.0.0.1", port)) as c:
            msg = f"hello {i}".encode()
            c.sendall(msg)
            c.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                part = c.recv(1024)
                if not part:
                    break
                got += part
            print("echo:", got.decode())
    server.join()
    return listener


def subprocesses():
    out = subprocess.run(["/bin/echo", "from", "echo"], stdout=subprocess.PIPE, check=True,
                         close_fds=True)
    print("subprocess:", out.stdout.decode().strip())
    p = subprocess.Popen(["/bin/cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         close_fds=True)
    out, _ = p.communicate(b"through cat\n")
    print("cat:", out.decode().strip(), "status", p.returncode)
    r, w = os.pipe()
    os.write(w, b"fd\n")
    os.close(w)
    out = subprocess.run(["/bin/sh", "-c", f"read x <&{r}; echo got $x"], pass_fds=(r,),
                         stdout=subprocess.PIPE, close_fds=True, check=True)
    os.close(r)
    print("pass_fds:", out.stdout.decode().strip())


def files(tmp):
    for name in ["b.txt", "a.txt", "c.txt"]:
        with open(os.path.join(tmp, name), "w") as f:
            f.write(name * 3)
    print("listdir:", sorted(os.listdir(tmp)))
    total = 0
    for name in sorted(os.listdir(tmp)):
        with open(os.path.join(tmp, name)) as f:
            total += len(f.read())
    print("bytes:", total)
    with tempfile.NamedTemporaryFile(dir=tmp) as t:
        t.write(b"temporary")
        t.flush()
        with open(t.name, "rb") as again:
            print("tempfile:", again.read().decode())
    r, w = os.pipe()
    os.write(w, b"through a pipe")
    os.close(w)
    print("pipe:", os.read(r, 100).decode())
    os.close(r)
    with os.scandir(tmp) as it:
        print("scandir:", sorted(e.name for e in it))


def main():
    listener = sockets()
    subprocesses()
    with tempfile.TemporaryDirectory() as tmp:
        files(tmp)
        if os.environ.get("PY_CHECKPOINT") == "1":
            keep = [open(os.path.join(tmp, "a.txt")), socket.socket(), os.pipe()]
            print("CHECKPOINT python", flush=True)
            sys.stdin.readline()
            keep[0].close()
            keep[1].close()
            os.close(keep[2][0])
            os.close(keep[2][1])
    listener.close()
    print("done")


if __name__ == "__main__":
    main()
