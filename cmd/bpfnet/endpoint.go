package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bpfnet/bpfnet/api"
)

func (c *cli) endpointCmd() *cobra.Command {
	cmd := group("endpoint", "Manage endpoints (container interfaces)")
	var req api.CreateEndpointRequest
	create := &cobra.Command{
		Use:   "create --network NET (--netns PATH | --pid PID) [OPTIONS]",
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
	f.StringVar(&req.IfName, "ifname", "eth0", "interface name inside the container")
	f.StringVar(&req.Name, "name", "", "endpoint name (default: short id)")
	f.StringArrayVarP(&req.Ports, "publish", "p", nil, "publish a port: [HOSTIP:]HOSTPORT:PORT[/tcp|udp], ports may be equal-length ranges (repeatable; HOSTIP defaults to the network's host_binding_ipv4)")

	var netFilter string
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List endpoints",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			eps, err := cl.Endpoints(cmd.Context(), netFilter)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "ENDPOINT ID\tNAME\tNETWORK\tIP\tMAC\tHOST IF\tNETNS\tIFNAME\tPORTS\tRX PKTS\tRX BYTES\tTX PKTS\tTX BYTES\tDROPS")
			for _, ep := range eps {
				// RX and TX as the container sees them: RX is what enters it.
				rx, rxb, tx, txb, drops := "-", "-", "-", "-", "-"
				if c := ep.Counters; c != nil {
					rx, rxb = fmt.Sprint(c.ToContainer.Packets), fmt.Sprint(c.ToContainer.Bytes)
					tx, txb = fmt.Sprint(c.FromContainer.Packets), fmt.Sprint(c.FromContainer.Bytes)
					var n uint64
					for _, d := range []map[string]uint64{c.ToContainer.Drops, c.FromContainer.Drops} {
						for _, v := range d {
							n += v
						}
					}
					drops = fmt.Sprint(n)
				}
				ports := make([]string, len(ep.Ports))
				for i, p := range ep.Ports {
					ports[i] = p.String()
				}
				if len(ports) == 0 {
					ports = []string{"-"}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ep.ID[:12], ep.Name, ep.Network, ep.IP, ep.MAC, ep.HostIf, ep.NetNS, ep.IfName,
					strings.Join(ports, ","), rx, rxb, tx, txb, drops)
			}
			return tw.Flush()
		},
	}
	ls.Flags().StringVar(&netFilter, "network", "", "only endpoints of this network")

	inspect := inspectCmd(c, "inspect ENDPOINT...", "Show endpoints in detail (JSON)",
		func(ctx context.Context, cl *api.Client, ref string) (api.Endpoint, error) {
			return cl.Endpoint(ctx, ref)
		})
	rm := removeCmd(c, "rm ENDPOINT...", "Remove endpoints (deletes their veth pairs)", (*api.Client).RemoveEndpoint)
	cmd.AddCommand(create, ls, inspect, rm)
	return cmd
}

func (c *cli) locateCmd() *cobra.Command {
	var req api.LocateRequest
	var asJSON bool
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
			if asJSON {
				return printJSON(c.stdout, loc)
			}
			fmt.Fprintln(c.stdout, loc.HostIf)
			return nil
		},
	}
	cmd.Flags().StringVar(&req.NetNS, "netns", "", "path of the container's network namespace")
	cmd.Flags().IntVar(&req.PID, "pid", 0, "pid of a process in the container")
	cmd.Flags().StringVar(&req.IfName, "ifname", "eth0", "interface inside the container")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print both sides, ifindexes, bridge, and the endpoint (id, name, container id) as JSON")
	return cmd
}
