package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func (c *cli) natCmd() *cobra.Command {
	cmd := group("nat", "Translations of the eBPF datapath (masquerade and published ports)")
	var asJSON bool
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List current translations: original and translated tuple, age, state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			entries, err := cl.NAT(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(c.stdout, entries)
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KIND\tPROTO\tCONTAINER\tTRANSLATED\tREMOTE\tSTATE\tAGE\tIDLE")
			for _, e := range entries {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Kind, e.Proto, e.Container, e.Translated, e.Remote, e.State,
					seconds(e.AgeSec), seconds(e.IdleSec))
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(ls)
	return cmd
}

func seconds(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(time.Second).String()
}
