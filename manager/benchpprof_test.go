//go:build linux

package manager

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
)

// LOCKBOX_TEST_PPROF_ADDR=host:port serves net/http/pprof from the child
// manager of the benchmarks (never from the test process itself), so its
// heap, allocation and goroutine profiles can be read while a fan-out
// runs: `go tool pprof -sample_index=alloc_space
// http://ADDR/debug/pprof/allocs?seconds=30`.
func init() {
	addr := os.Getenv("LOCKBOX_TEST_PPROF_ADDR")
	if addr == "" || os.Getenv("LOCKBOX_TEST_RUN_MANAGER") == "" {
		return
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pprof:", err)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	go http.Serve(l, mux)
}
