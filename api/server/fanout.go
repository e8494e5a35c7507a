package server

import (
	"context"
	"sync"

	"github.com/bpfnet/bpfnet/network"
)

// fanout hands the enforcer's drop events to every `bpfnet monitor`
// watching. A slow watcher misses events rather than holding the others
// up; with nobody watching, events are read and dropped.
type fanout struct {
	mu   sync.Mutex
	subs map[chan network.DropEvent]struct{}
}

func newFanout(events <-chan network.DropEvent) *fanout {
	f := &fanout{subs: map[chan network.DropEvent]struct{}{}}
	go func() {
		for ev := range events {
			f.mu.Lock()
			for ch := range f.subs {
				select {
				case ch <- ev:
				default:
				}
			}
			f.mu.Unlock()
		}
	}()
	return f
}

// subscribe returns a channel of drop events until ctx ends.
func (f *fanout) subscribe(ctx context.Context) <-chan network.DropEvent {
	ch := make(chan network.DropEvent, 256)
	f.mu.Lock()
	f.subs[ch] = struct{}{}
	f.mu.Unlock()
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		delete(f.subs, ch)
		close(ch)
		f.mu.Unlock()
	}()
	return ch
}
