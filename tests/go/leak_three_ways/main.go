// Leaks fds three ways, as the Go services behind fdguard's incidents did, for
// tests/suite/trace_reports.rs and tests/suite/ebpf_attach.rs:
//
//	leak_three_ways BACKEND_ADDR HTTP_URL COUNT
//
// main.leakFiles opens a file COUNT times and never closes it; main.dialBackend dials
// BACKEND_ADDR (tcp) COUNT times and never closes the connections; main.fetchStatus makes COUNT
// GETs of HTTP_URL and never closes the response bodies (each keeps its connection, dialed by a
// goroutine net/http starts; HTTP_URL `-`: none). Prints `LEAK file FD` and `LEAK dial FD`
// for the fds it knows, then `CHECKPOINT leaked`, and reads a line on stdin: `again` leaks
// as much once more (tests/suite/ebpf_attach.rs attaches between two rounds), any other
// line ends it. An open or a dial that fails (EMFILE) prints `FAILED ERR` and ends that
// function's round.
package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
)

var kept []interface{}

func leakFiles(n int) {
	for i := 0; i < n; i++ {
		f, err := os.Open("/etc/hostname")
		if err != nil {
			fmt.Println("FAILED", err)
			return
		}
		kept = append(kept, f)
		fmt.Println("LEAK file", f.Fd())
	}
}

func dialBackend(addr string, n int) {
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			fmt.Println("FAILED", err)
			return
		}
		kept = append(kept, c)
		raw, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			fail(err)
		}
		_ = raw.Control(func(fd uintptr) { fmt.Println("LEAK dial", fd) })
	}
}

func fetchStatus(url string, n int) {
	for i := 0; i < n; i++ {
		resp, err := http.Get(url)
		if err != nil {
			fail(err)
		}
		// The body is never closed: its connection stays open, as in the incident.
		kept = append(kept, resp)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "leak_three_ways:", err)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: leak_three_ways BACKEND_ADDR HTTP_URL COUNT")
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[3])
	if err != nil {
		fail(err)
	}
	in := bufio.NewReader(os.Stdin)
	for {
		leakFiles(n)
		dialBackend(os.Args[1], n)
		if os.Args[2] != "-" {
			fetchStatus(os.Args[2], n)
		}
		fmt.Println("CHECKPOINT leaked")
		line, _ := in.ReadString('\n')
		if strings.TrimSpace(line) != "again" {
			return
		}
	}
}
