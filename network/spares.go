package network

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// Spare veth pairs for hand-off endpoints (Docker's driver).
//
// With TCX, each of an endpoint's two attachments waits for an RCU grace
// period under the RTNL lock: about 25 of the 28 ms that making a hand-off
// pair costs (loader's TestPoolCost). A pair made and attached beforehand
// only needs its container side renamed and its pinned links' programs
// replaced, which waits for nothing (0.6 ms). Docker's engine moves a
// hand-off endpoint's container side into the container itself, whichever
// pair it gets, so a spare saves the whole wait. An endpoint made in a
// namespace (bpfnet's API, CNI) never takes one: it would have to move the
// container side itself, and the move waits about as long as the
// attachments do (TestPoolCost).
//
// Spares are kept from the first hand-off endpoint asked for on (a host
// whose Docker never uses the driver gets none). A new one is made only
// after spareQuiet without any endpoint creation, one at a time under the
// manager's lock, so a burst of creations takes spares and is slowed by
// their refill by at most one pair's making.

// spareQuiet is how long no endpoint must have been created before a
// spare is made.
const spareQuiet = 100 * time.Millisecond

type spares struct {
	max   int      // how many to keep (0: none)
	names []string // host sides, oldest first
	last  time.Time
	kick  chan struct{} // a spare was asked for: refill
	// waiting is len(names) and taken counts the spares endpoints took,
	// for readers that must not wait for the manager's lock (a scrape).
	waiting atomic.Int64
	taken   atomic.Uint64
}

// Spares reports how many spares wait, and how many endpoints took one.
func (m *Manager) Spares() (waiting int, taken uint64) {
	return int(m.spare.waiting.Load()), m.spare.taken.Load()
}

// KeepSpares keeps up to n spares until ctx ends, then deletes them; the
// returned channel closes once they are gone. It keeps none when n is 0
// or the enforcer's attachments wait for nothing (not a Preattacher, or
// legacy tc).
func (m *Manager) KeepSpares(ctx context.Context, n int) <-chan struct{} {
	done := make(chan struct{})
	pre, ok := m.enf.(Preattacher)
	if n <= 0 || !ok {
		close(done)
		return done
	}
	kick := make(chan struct{}, 1)
	m.mu.Lock()
	m.spare.max, m.spare.kick = n, kick
	m.mu.Unlock()
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				m.dropSpares(pre)
				return
			case <-kick:
				m.refillSpares(ctx, pre)
			}
		}
	}()
	return done
}

// refillSpares makes spares, each once no endpoint was created for
// spareQuiet, until there are enough or one cannot be made (the next
// hand-off endpoint tries again).
func (m *Manager) refillSpares(ctx context.Context, pre Preattacher) {
	for {
		m.mu.Lock()
		if len(m.spare.names) >= m.spare.max {
			m.mu.Unlock()
			return
		}
		var err error
		wait := spareQuiet - time.Since(m.spare.last)
		if wait <= 0 {
			err = m.addSpare(pre)
		}
		m.mu.Unlock()
		if err != nil {
			m.log.Warn("spare veth pair not made: hand-off endpoints make their own", "err", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(wait, 0)):
		}
	}
}

// addSpare makes one spare with its programs attached (callers hold mu).
func (m *Manager) addSpare(pre Preattacher) error {
	name, err := m.host.CreateSpare()
	if err != nil {
		return err
	}
	ok, err := pre.Preattach(name)
	if err == nil && ok {
		m.spare.names = append(m.spare.names, name)
		m.spare.waiting.Store(int64(len(m.spare.names)))
		return nil
	}
	if err == nil {
		m.log.Info("endpoint attachments wait for nothing here (legacy tc): no spare veth pairs kept")
		m.spare.max = 0
	}
	return errors.Join(err, m.host.DeleteSpare(name))
}

// takeSpare returns a spare's host side for a hand-off endpoint, or ""
// when none is waiting, and asks for a refill. Every endpoint creation
// calls it: refills wait for a quiet moment (callers hold mu).
func (m *Manager) takeSpare(handOff bool) string {
	m.spare.last = time.Now()
	if !handOff || m.spare.max == 0 {
		return ""
	}
	select {
	case m.spare.kick <- struct{}{}:
	default: // a refill is asked for already
	}
	if len(m.spare.names) == 0 {
		return ""
	}
	name := m.spare.names[0]
	m.spare.names = m.spare.names[1:]
	m.spare.waiting.Store(int64(len(m.spare.names)))
	m.spare.taken.Add(1)
	return name
}

// dropSpare removes a spare that endpoint ep took and gives up (the take
// or a later step failed): its programs, then the pair, marked as a spare
// or, if the take got that far, as ep's (callers hold mu).
func (m *Manager) dropSpare(name string, ep *Endpoint) {
	pre := m.enf.(Preattacher)
	m.logFailure("delete spare veth", name, errors.Join(pre.Unattach(name), m.host.DeleteSpare(name), m.host.DeleteEndpoint(ep)))
}

// dropSpares deletes the spares no endpoint took.
func (m *Manager) dropSpares(pre Preattacher) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, name := range m.spare.names {
		m.logFailure("delete spare veth", name, errors.Join(pre.Unattach(name), m.host.DeleteSpare(name)))
	}
	m.spare.names, m.spare.max, m.spare.kick = nil, 0, nil
	m.spare.waiting.Store(0)
}
