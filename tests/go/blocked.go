// A Go program that blocks in a system call from a known call chain, for the stack tests
// (cli/src/trace/stack/tests.rs): opening a FIFO that has no writer blocks in openat.
//
//	blocked main PATH       main.main -> main.readConfig -> main.openConfig (inlined) -> os.ReadFile
//	blocked goroutine PATH  the same in a goroutine main.startWorker started
//	blocked http PATH URL   in the dial goroutine net/http starts for main.fetchStatus's GET
//	blocked deep PATH       main.main -> main.nest (24 calls deep) -> main.readConfig
//	blocked dials URL       main.main -> main.fetchLoop: GETs without end (the test stops the
//	                        socket call of one of net/http's dial goroutines)
package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"time"
)

// openConfig is small enough to be inlined into readConfig.
func openConfig(path string) ([]byte, error) {
	return os.ReadFile(path) // LINE openConfig
}

//go:noinline
func readConfig(path string) []byte {
	data, _ := openConfig(path) // LINE readConfig
	return data
}

//go:noinline
func worker(path string, done chan<- bool) {
	readConfig(path) // LINE worker
	done <- true
}

//go:noinline
func startWorker(path string, done chan<- bool) {
	go worker(path, done) // LINE startWorker
}

//go:noinline
func fetchStatus(url, path string) {
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			readConfig(path) // LINE dial
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
	if resp, err := client.Get(url); err == nil { // LINE fetchStatus
		resp.Body.Close()
	}
}

//go:noinline
func nest(depth int, path string) {
	if depth == 0 {
		readConfig(path)
		return
	}
	nest(depth-1, path) // LINE nest
}

//go:noinline
func fetchLoop(url string) {
	for {
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		if resp, err := client.Get(url); err == nil { // LINE fetchLoop
			resp.Body.Close()
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func main() {
	switch os.Args[1] {
	case "main":
		readConfig(os.Args[2]) // LINE main
	case "goroutine":
		done := make(chan bool)
		startWorker(os.Args[2], done) // LINE main-goroutine
		<-done
	case "http":
		fetchStatus(os.Args[3], os.Args[2]) // LINE main-http
	case "deep":
		nest(24, os.Args[2])
	case "dials":
		fetchLoop(os.Args[2]) // LINE main-dials
	}
}
