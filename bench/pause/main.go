// Command pause waits for SIGTERM or SIGINT: the one process of the
// containers `make bench-dockerd` starts. Built static, it is the whole
// image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
