package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// Shell completion (cobra's `bpfnet completion bash|zsh|fish|powershell`)
// completes network and endpoint names by asking the daemon; man pages
// come from the same command tree (`bpfnet gen-man DIR`, which `make
// install` runs).

// completeNetworks completes every argument with the daemon's network
// names.
func (c *cli) completeNetworks(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	return c.networkNames(cmd, toComplete)
}

// completeConnect completes NETWORK CONTAINER: a network name, then a
// network namespace of /run/netns.
func (c *cli) completeConnect(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	switch len(args) {
	case 0:
		return c.networkNames(cmd, toComplete)
	case 1:
		entries, _ := os.ReadDir("/run/netns")
		var out []string
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), toComplete) {
				out = append(out, e.Name())
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
	return nil, cobra.ShellCompDirectiveNoFileComp
}

func (c *cli) networkNames(cmd *cobra.Command, prefix string) ([]string, cobra.ShellCompDirective) {
	cl, err := c.client()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	nets, err := cl.Networks(cmd.Context())
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var out []string
	for _, n := range nets {
		if strings.HasPrefix(n.Name, prefix) {
			out = append(out, n.Name)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeEndpoints completes every argument with endpoint names.
func (c *cli) completeEndpoints(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	cl, err := c.client()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	eps, err := cl.Endpoints(cmd.Context(), "")
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var out []string
	for _, ep := range eps {
		if strings.HasPrefix(ep.Name, toComplete) {
			out = append(out, ep.Name)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeNetworkFlag is the completion of a --network flag.
func (c *cli) completeNetworkFlag(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	return c.networkNames(cmd, toComplete)
}

// genManCmd writes a man page for every command into a directory.
func genManCmd(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:    "gen-man DIR",
		Short:  "Write the man pages of every command into DIR (make install does)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return err
			}
			root.DisableAutoGenTag = true
			hdr := &doc.GenManHeader{Title: "BPFNET", Section: "1", Source: "bpfnet", Manual: "bpfnet manual"}
			if err := doc.GenManTree(root, hdr, args[0]); err != nil {
				return fmt.Errorf("write man pages: %w", err)
			}
			return nil
		},
	}
}
