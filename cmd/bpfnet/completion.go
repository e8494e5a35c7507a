package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/bpfnet/bpfnet/api"
)

// Shell completion (cobra's `bpfnet completion bash|zsh|fish|powershell`)
// completes network and endpoint names by asking the daemon; man pages
// come from the same command tree (`bpfnet gen-man DIR`, which `make
// install` runs).

// completeNetworks completes every argument (or a --network flag) with
// the daemon's network names.
func (c *cli) completeNetworks(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	return c.completeNames(cmd, toComplete, func(ctx context.Context, cl *api.Client) ([]string, error) {
		nets, err := cl.Networks(ctx)
		var names []string
		for _, n := range nets {
			names = append(names, n.Name)
		}
		return names, err
	})
}

// completeEndpoints completes every argument with endpoint names.
func (c *cli) completeEndpoints(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	return c.completeNames(cmd, toComplete, func(ctx context.Context, cl *api.Client) ([]string, error) {
		eps, err := cl.Endpoints(ctx, "")
		var names []string
		for _, ep := range eps {
			names = append(names, ep.Name)
		}
		return names, err
	})
}

// completeConnect completes NETWORK CONTAINER: a network name, then a
// network namespace of /run/netns.
func (c *cli) completeConnect(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	switch len(args) {
	case 0:
		return c.completeNetworks(cmd, args, toComplete)
	case 1:
		return c.completeNames(cmd, toComplete, func(context.Context, *api.Client) ([]string, error) {
			entries, _ := os.ReadDir("/run/netns") // none yet: nothing to offer
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			return names, nil
		})
	}
	return nil, cobra.ShellCompDirectiveNoFileComp
}

// completeNames offers the names list returns that start with prefix.
func (c *cli) completeNames(cmd *cobra.Command, prefix string, list func(context.Context, *api.Client) ([]string, error)) ([]string, cobra.ShellCompDirective) {
	cl, err := c.client()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	names, err := list(cmd.Context(), cl)
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
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
