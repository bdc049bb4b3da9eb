// A Go program for fdguard's tracer (tests/suite/trace.rs): it leaks files it opened and
// connections it dialed to its own loopback listener, from several goroutines, closes others,
// runs a child process, and prints `EXPECT fd call` for each fd it leaks and `START` /
// `PROCFD` lines listing /proc/self/fd at its start and just before it exits.
package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// listFds prints label and the fds /proc/self/fd lists (without the one reading it), read
// with system calls alone: os.Open would start the runtime's poller (an epoll fd and a pipe)
// the first time, which START must not list.
func listFds(label string) {
	d, err := syscall.Open("/proc/self/fd", syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	check(err)
	buf := make([]byte, 64*1024)
	n, err := syscall.ReadDirent(d, buf)
	check(err)
	_, _, names := syscall.ParseDirent(buf[:n], -1, nil)
	check(syscall.Close(d))
	var fds []int
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		check(err)
		if fd != d {
			fds = append(fds, fd)
		}
	}
	sort.Ints(fds)
	s := make([]string, len(fds))
	for i, fd := range fds {
		s[i] = strconv.Itoa(fd)
	}
	fmt.Printf("%s %s\n", label, strings.Join(s, " "))
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(99)
	}
}

// connFd is the fd of a TCP connection or listener.
func connFd(c syscall.Conn) int {
	raw, err := c.SyscallConn()
	check(err)
	var fd int
	check(raw.Control(func(f uintptr) { fd = int(f) }))
	return fd
}

var kept []interface{}

func main() {
	listFds("START")
	var mu sync.Mutex
	expect := func(fd int, call string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf("EXPECT %d %s\n", fd, call)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	expect(connFd(l.(*net.TCPListener)), "socket")
	accepted := make(chan net.Conn)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.Open("/etc/hostname")
			check(err)
			expect(int(f.Fd()), "openat")
			g, err := os.Open("/etc/hostname")
			check(err)
			check(g.Close())
			c, err := net.Dial("tcp", l.Addr().String())
			check(err)
			expect(connFd(c.(*net.TCPConn)), "socket")
			a := <-accepted
			expect(connFd(a.(*net.TCPConn)), "accept4")
			mu.Lock()
			kept = append(kept, f, c, a)
			mu.Unlock()
		}()
	}
	wg.Wait()
	// A child process started the Go way (clone with CLONE_VFORK, then exec): followed too.
	check(exec.Command("/bin/true").Run())
	listFds("PROCFD")
}
