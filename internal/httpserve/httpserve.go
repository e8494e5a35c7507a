// Package httpserve serves HTTP on a listener until a context ends, the one
// way bpfnetd's servers (the API on its unix socket, the metrics on TCP)
// start and shut down.
package httpserve

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// Serve serves h on l until ctx ends, then shuts down: it stops accepting,
// gives requests in progress 5 seconds, and closes the rest (a `bpfnet
// monitor` stream or a scrape). It returns nil after a shutdown.
func Serve(ctx context.Context, l net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
