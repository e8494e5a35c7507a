package network

import "context"

// View is the desired state an enforcer works from: every network in
// creation order (oldest first) and every endpoint.
type View struct {
	Networks  []*Network
	Endpoints []*Endpoint
}

// Network returns the network with the given id, or nil.
func (v View) Network(id string) *Network {
	for _, n := range v.Networks {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// Enforcer applies the policy of the desired state to a datapath (iptables
// rules, or BPF maps and programs). The manager calls it after the host
// plumbing of a change exists and before the change is persisted; each
// call gets the view as it is with the change applied. Calls are serialised.
type Enforcer interface {
	// Name is the datapath's name as shown by `bpfnet status`.
	Name() string
	// Reconcile converges the datapath to v at daemon start: what is
	// missing is added, leftovers of ours that v no longer has are removed,
	// and nothing is duplicated.
	Reconcile(ctx context.Context, v View) error
	NetworkAdded(ctx context.Context, v View, n *Network) error
	NetworkRemoved(ctx context.Context, v View, n *Network) error
	EndpointAdded(ctx context.Context, v View, ep *Endpoint) error
	EndpointRemoved(ctx context.Context, v View, ep *Endpoint) error
	// Cleanup removes everything the enforcer ever installed.
	Cleanup(ctx context.Context) error
}

// Limits is what an enforcer that can hold only so many networks and
// endpoints implements (the eBPF datapath's maps have fixed sizes); the
// manager refuses to create more, with a message, before touching the
// host.
type Limits interface {
	Limits() (networks, endpoints int)
}
