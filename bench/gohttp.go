// The Go rows of scripts/bench.sh (issue 26): a net/http server, and the client that loads it,
// in one program:
//
//	gohttp serve            serves GET / on 127.0.0.1 (a free port, printed as `port=N`)
//	                        until its stdin ends
//	gohttp load PORT N PAR MODE
//	                        makes exactly N requests with PAR goroutines; MODE `new` opens a
//	                        connection per request, `keepalive` reuses them; prints
//	                        `mode=new requests=N seconds=S requests_per_s=R`
//
// Standard library only, built with CGO_ENABLED=0 (a static program: `fdguard run` traces it).
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) >= 2 && os.Args[1] == "serve" {
		serve()
		return
	}
	if len(os.Args) == 6 && os.Args[1] == "load" {
		load(os.Args[2], os.Args[3], os.Args[4], os.Args[5])
		return
	}
	fmt.Fprintln(os.Stderr, "usage: gohttp serve | gohttp load PORT N PAR new|keepalive")
	os.Exit(2)
}

func serve() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	fmt.Printf("port=%d\n", ln.Addr().(*net.TCPAddr).Port)
	go func() {
		// The bench ends the server by closing its stdin.
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	body := []byte("ok\n")
	_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(body)
	}))
}

func load(port, count, par, mode string) {
	n, err1 := strconv.Atoi(count)
	p, err2 := strconv.Atoi(par)
	if err1 != nil || err2 != nil || n < 1 || p < 1 || (mode != "new" && mode != "keepalive") {
		fmt.Fprintln(os.Stderr, "load: bad arguments")
		os.Exit(2)
	}
	transport := &http.Transport{
		DisableKeepAlives:   mode == "new",
		MaxIdleConnsPerHost: p,
	}
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	url := "http://127.0.0.1:" + port + "/"
	var next, failed int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < p; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for atomic.AddInt64(&next, 1) <= int64(n) {
				resp, err := client.Get(url)
				if err != nil {
					atomic.AddInt64(&failed, 1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	seconds := time.Since(start).Seconds()
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "load: %d of %d requests failed\n", failed, n)
		os.Exit(1)
	}
	fmt.Printf("mode=%s requests=%d seconds=%.3f requests_per_s=%.1f\n", mode, n, seconds, float64(n)/seconds)
}
