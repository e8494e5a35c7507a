package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bpfnet/bpfnet/api"
)

func (c *cli) monitorCmd() *cobra.Command {
	var netRef, epRef, format string
	cmd := &cobra.Command{
		Use:   "monitor",
		Short: "Stream dropped packets as they happen (eBPF datapath)",
		Long: "Stream dropped packets: time, endpoint, network, direction, reason, protocol (or the frame's type),\n" +
			"length in bytes, source and destination (with ports for TCP and UDP; ARP: sender and target) and ICMP type.\n" +
			"The datapath sends at most 1000 events per second per CPU; `bpfnet status` counts what it held back.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "text" && format != "json" {
				return fmt.Errorf("invalid --format %q: want text or json", format)
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			return cl.Monitor(cmd.Context(), netRef, epRef, func(ev api.MonitorEvent) error {
				if format == "json" {
					b, err := json.Marshal(ev)
					if err != nil {
						return err
					}
					_, err = fmt.Fprintf(c.stdout, "%s\n", b)
					return err
				}
				where := ev.Endpoint
				if where == "" {
					where = "-"
				}
				flow := "-"
				if ev.Src != "" {
					flow = ev.Src + " → " + ev.Dst
				}
				if ev.ICMPType != "" {
					flow += " " + ev.ICMPType
				}
				_, err := fmt.Fprintf(c.stdout, "%s  %-16s %-12s %-14s %-12s %-6s %5d  %s\n", ev.Time.Format("15:04:05.000"), where,
					or(ev.Network, "-"), ev.Direction, ev.Reason, or(ev.Proto, "-"), ev.Length, flow)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&netRef, "network", "", "only drops in this network (name or id)")
	cmd.Flags().StringVar(&epRef, "endpoint", "", "only drops of this endpoint (name or id)")
	cmd.Flags().StringVar(&format, "format", "text", "text (one line per drop) or json (one object per line)")
	return cmd
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
