package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/internal/version"
)

// versions is what `bpfnet version` reports, as `docker version` does:
// the CLI's build and the daemon's (nil when it cannot be reached).
type versions struct {
	Client api.Version
	Server *api.Version
}

func (c *cli) versionCmd() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Show the version of the CLI and of the daemon",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v := versions{Client: version.API()}
			var serverErr error
			if cl, err := c.client(); err != nil {
				serverErr = err
			} else if sv, err := cl.Version(cmd.Context()); err != nil {
				serverErr = err
			} else {
				v.Server = &sv
			}
			err := writeValue(c.stdout, format, []versions{v}, false, func() error {
				tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
				print := func(title string, v api.Version) {
					fmt.Fprintf(tw, "%s:\n Version:\t%s\n Commit:\t%s\n Built:\t%s\n Go version:\t%s\n OS/Arch:\t%s/%s\n",
						title, v.Version, or(v.Commit, "unknown"), or(v.Built, "unknown"), v.GoVersion, v.Os, v.Arch)
				}
				print("Client", v.Client)
				if v.Server != nil {
					fmt.Fprintln(tw)
					print("Server (bpfnetd)", *v.Server)
				}
				return tw.Flush()
			})
			if serverErr != nil {
				return fmt.Errorf("cannot reach the daemon: %w", serverErr)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&format, "format", "", `"json", or a Go TEMPLATE such as '{{.Server.Version}}'`)
	return cmd
}
