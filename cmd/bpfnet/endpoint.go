package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bpfnet/bpfnet/api"
)

func (c *cli) endpointCmd() *cobra.Command {
	cmd := group("endpoint", "Manage endpoints (container interfaces)")
	var req api.CreateEndpointRequest
	create := &cobra.Command{
		Use:   "create --network NET (--netns PATH | --pid PID)",
		Short: "Attach a network namespace to a network",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case req.Network == "":
				return fmt.Errorf("--network is required")
			case req.NetNS == "" && req.PID == 0:
				return fmt.Errorf("a namespace is needed: --netns PATH or --pid PID")
			case req.NetNS != "" && req.PID != 0:
				return fmt.Errorf("give either --netns or --pid, not both")
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			ep, err := cl.CreateEndpoint(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.stdout, ep.ID)
			return nil
		},
	}
	f := create.Flags()
	f.StringVar(&req.Network, "network", "", "network name or id (required)")
	f.StringVar(&req.NetNS, "netns", "", "path of the container's network namespace, e.g. /run/netns/NAME")
	f.IntVar(&req.PID, "pid", 0, "pid of a process in the container's network namespace")
	f.StringVar(&req.IP, "ip", "", "IPv4 address (default: first free in the network's range)")
	f.StringVar(&req.IP6, "ip6", "", "IPv6 address on a dual-stack network (default: first free in its IPv6 range)")
	f.StringVar(&req.IfName, "ifname", "eth0", "interface name inside the container")
	f.StringVar(&req.Name, "name", "", "endpoint name, e.g. the container's (default: its short id)")
	f.StringArrayVarP(&req.Ports, "publish", "p", nil, "publish a port: [HOSTIP:]HOSTPORT:PORT[/tcp|udp], ports may be equal-length ranges (repeatable; HOSTIP defaults to the network's host_binding_ipv4)")

	f.StringVar(&req.MAC, "mac-address", "", "MAC address (default: 02:42 and the IPv4 address, as Docker)")
	mustFlag(create.RegisterFlagCompletionFunc("network", c.completeNetworks))

	inspect := inspectCmd(c, "inspect ENDPOINT...", "Show endpoints in detail (JSON)",
		func(ctx context.Context, cl *api.Client, ref string) (api.Endpoint, error) {
			return cl.Endpoint(ctx, ref)
		})
	inspect.ValidArgsFunction = c.completeEndpoints
	rm := removeCmd(c, "rm ENDPOINT...", "Remove endpoints (deletes their veth pairs)", (*api.Client).RemoveEndpoint)
	rm.ValidArgsFunction = c.completeEndpoints
	cmd.AddCommand(create, c.endpointLsCmd(), inspect, rm)
	return cmd
}

// endpointRow is an endpoint as `endpoint ls` prints it; its fields are
// the --format template's. RX and TX are as the container sees them: RX
// is what entered it.
type endpointRow struct {
	ID          string `header:"ENDPOINT ID"`
	Name        string
	Network     string
	IP          string
	IP6         string
	MAC         string
	HostIf      string `header:"HOST IF"`
	NetNS       string
	IfName      string
	Ports       string
	ContainerID string `header:"CONTAINER ID"`
	Runtime     string
	RxPackets   string `header:"RX PKTS"`
	RxBytes     string `header:"RX BYTES"`
	TxPackets   string `header:"TX PKTS"`
	TxBytes     string `header:"TX BYTES"`
	Drops       string
	meta
}

func endpointRowOf(ep api.Endpoint, noTrunc bool) endpointRow {
	r := endpointRow{ID: shortID(ep.ID, noTrunc), Name: ep.Name, Network: ep.Network, IP: ep.IP.String(), IP6: "-", MAC: ep.MAC,
		HostIf: ep.HostIf, NetNS: or(ep.NetNS, "-"), IfName: ep.IfName, ContainerID: or(shortID(ep.ContainerID, noTrunc), "-"),
		Runtime: or(ep.Runtime, "-"), meta: metaOf(ep.Labels, ep.Created),
		RxPackets: "-", RxBytes: "-", TxPackets: "-", TxBytes: "-", Drops: "-"}
	if ep.IP6.IsValid() {
		r.IP6 = ep.IP6.String()
	}
	if c := ep.Counters; c != nil {
		r.RxPackets, r.RxBytes = fmt.Sprint(c.ToContainer.Packets), fmt.Sprint(c.ToContainer.Bytes)
		r.TxPackets, r.TxBytes = fmt.Sprint(c.FromContainer.Packets), fmt.Sprint(c.FromContainer.Bytes)
		var n uint64
		for _, d := range []map[string]uint64{c.ToContainer.Drops, c.FromContainer.Drops} {
			for _, v := range d {
				n += v
			}
		}
		r.Drops = fmt.Sprint(n)
	}
	ports := make([]string, len(ep.Ports))
	for i, p := range ep.Ports {
		ports[i] = p.String()
	}
	r.Ports = or(strings.Join(ports, ","), "-")
	return r
}

var endpointFilters = map[string]func(ep api.Endpoint, v string) (bool, error){
	"name": func(ep api.Endpoint, v string) (bool, error) { return strings.Contains(ep.Name, v), nil },
	"id":   func(ep api.Endpoint, v string) (bool, error) { return strings.HasPrefix(ep.ID, v), nil },
	"network": func(ep api.Endpoint, v string) (bool, error) {
		return ep.Network == v || strings.HasPrefix(ep.NetworkID, v), nil
	},
	"container": func(ep api.Endpoint, v string) (bool, error) {
		return v != "" && strings.HasPrefix(ep.ContainerID, v), nil
	},
	"runtime": func(ep api.Endpoint, v string) (bool, error) { return ep.Runtime == v, nil },
	"label":   func(ep api.Endpoint, v string) (bool, error) { return hasLabel(ep.Labels, v), nil },
}

// The default view fits 80 columns; --no-trunc shows every column.
const (
	endpointTable     = `{{.ID}}\t{{.Name}}\t{{.Network}}\t{{.IP}}\t{{.Ports}}`
	endpointWideTable = `{{.ID}}\t{{.Name}}\t{{.Network}}\t{{.IP}}\t{{.IP6}}\t{{.MAC}}\t{{.HostIf}}\t{{.NetNS}}\t{{.IfName}}\t{{.Ports}}\t` +
		`{{.RxPackets}}\t{{.RxBytes}}\t{{.TxPackets}}\t{{.TxBytes}}\t{{.Drops}}`
)

func (c *cli) endpointLsCmd() *cobra.Command {
	var netFilter, format string
	var quiet, noTrunc bool
	var filters []string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List endpoints",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fs, err := parseFilters(filters, endpointFilters)
			if err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			eps, err := cl.Endpoints(cmd.Context(), netFilter)
			if err != nil {
				return err
			}
			if eps, err = filtered(fs, endpointFilters, eps); err != nil {
				return err
			}
			table := endpointTable
			switch {
			case quiet:
				format = "{{.ID}}"
			case noTrunc:
				table = endpointWideTable
			}
			rows := make([]endpointRow, len(eps))
			for i, ep := range eps {
				rows[i] = endpointRowOf(ep, noTrunc)
			}
			return writeRows(c.stdout, format, table, rows)
		},
	}
	f := cmd.Flags()
	f.StringVar(&netFilter, "network", "", "only endpoints of this network (as --filter network=)")
	mustFlag(cmd.RegisterFlagCompletionFunc("network", c.completeNetworks))
	f.BoolVarP(&quiet, "quiet", "q", false, "only print endpoint ids")
	f.BoolVar(&noTrunc, "no-trunc", false, "every column (MAC, host interface, namespace, counters), ids untruncated")
	f.StringVar(&format, "format", "", formatFlagUsage+"; fields: "+fieldsOf[endpointRow]()+`, {{.Label "KEY"}}`)
	f.StringArrayVarP(&filters, "filter", "f", nil, "filter KEY=VALUE: name, id, network, container (id prefix), runtime, label (KEY or KEY=VALUE); repeatable")
	return cmd
}

func (c *cli) locateCmd() *cobra.Command {
	var req api.LocateRequest
	var format string
	cmd := &cobra.Command{
		Use:   "locate (--netns PATH | --pid PID) [--ifname eth0]",
		Short: "Print the host-side veth of a container interface (any container, bpfnet's or not)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			loc, err := cl.Locate(cmd.Context(), req)
			if err != nil {
				return err
			}
			return writeValue(c.stdout, format, []api.Location{loc}, false, func() error {
				_, err := fmt.Fprintln(c.stdout, loc.HostIf)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&req.NetNS, "netns", "", "path of the container's network namespace")
	cmd.Flags().IntVar(&req.PID, "pid", 0, "pid of a process in the container")
	cmd.Flags().StringVar(&req.IfName, "ifname", "eth0", "interface inside the container")
	cmd.Flags().StringVar(&format, "format", "", `"json": both sides, ifindexes, bridge and the endpoint (id, name, container id); or a Go TEMPLATE such as '{{.Bridge}}'`)
	deprecatedJSON(cmd, &format)
	return cmd
}
