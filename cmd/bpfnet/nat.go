package main

import (
	"time"

	"github.com/spf13/cobra"
)

func (c *cli) natCmd() *cobra.Command {
	cmd := group("nat", "Translations of the eBPF datapath (masquerade and published ports)")
	var format string
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
			rows := make([]natRow, len(entries))
			for i, e := range entries {
				rows[i] = natRow{Kind: e.Kind, Proto: e.Proto, Container: e.Container, Translated: e.Translated, Remote: e.Remote,
					State: e.State, Age: seconds(e.AgeSeconds), Idle: seconds(e.IdleSeconds)}
			}
			return writeRows(c.stdout, format, `{{.Kind}}\t{{.Proto}}\t{{.Container}}\t{{.Translated}}\t{{.Remote}}\t{{.State}}\t{{.Age}}\t{{.Idle}}`, rows)
		},
	}
	ls.Flags().StringVar(&format, "format", "", formatFlagUsage+"; fields: "+fieldsOf[natRow]())
	deprecatedJSON(ls, &format)
	cmd.AddCommand(ls)
	return cmd
}

// natRow is a translation as `nat ls` prints it.
type natRow struct {
	Kind, Proto, Container, Translated, Remote, State, Age, Idle string
}

func seconds(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(time.Second).String()
}
