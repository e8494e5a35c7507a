// Command pause waits for SIGTERM or SIGINT: the one process of the
// containers tests and `make bench-dockerd` start. Built static, it is
// the whole image (testnet.Dockerd.Run).
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
