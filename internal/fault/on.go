//go:build faultinject

package fault

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

var (
	mu    sync.Mutex
	seen  = map[string]int{}
	which = os.Getenv("BPFNET_FAULT")
)

// Point kills the process with SIGKILL when it is the configured point.
func Point(name string) {
	want, nth, _ := strings.Cut(which, ":")
	if want != name {
		return
	}
	n := 1
	if nth != "" {
		n, _ = strconv.Atoi(nth)
	}
	mu.Lock()
	seen[name]++
	hit := seen[name] == n
	mu.Unlock()
	if hit {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // never returns
	}
}
