// Command bpfnet is the CLI of bpfnetd, shaped like the docker CLI's
// network commands. See docs/bpfnet.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/internal/version"
)

func main() {
	root := newRoot(os.Stdout, os.Stderr)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

// cli holds what every command needs.
type cli struct {
	host   string
	stdout io.Writer
	stderr io.Writer
}

func (c *cli) client() (*api.Client, error) {
	return api.NewClient(c.host)
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	c := &cli{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "bpfnet",
		Short:         "Manage bpfnet networks and endpoints",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Version,
	}
	root.SetVersionTemplate(version.String("bpfnet") + "\n")
	// A --format that is no valid template is refused before anything
	// asks the daemon.
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		if f := cmd.Flags().Lookup("format"); f != nil {
			return checkFormat(f.Value.String())
		}
		return nil
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	def := os.Getenv("BPFNET_HOST")
	if def == "" {
		def = "unix://" + api.DefaultSocket
	}
	root.PersistentFlags().StringVarP(&c.host, "host", "H", def, "daemon socket (unix://PATH); also $BPFNET_HOST")
	root.AddCommand(c.networkCmd(), c.endpointCmd(), c.locateCmd(), c.statusCmd(), c.natCmd(), c.monitorCmd(), c.compatCmd(),
		c.versionCmd(), genManCmd(root))
	return root
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "    ")
	enc.SetEscapeHTML(false) // "0.0.0.0:8080->80/tcp" stays readable
	return enc.Encode(v)
}

// inspectCmd is `X inspect REF...`: a JSON array of what get returns,
// or --format's template for each.
func inspectCmd[T any](c *cli, use, short string, get func(context.Context, *api.Client, string) (T, error)) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			out := []T{}
			err = eachArg(args, func(ref string) error {
				v, err := get(cmd.Context(), cl, ref)
				if err == nil {
					out = append(out, v)
				}
				return err
			}, c.stderr)
			if len(out) == 0 && err != nil {
				return err
			}
			return errors.Join(writeValue(c.stdout, format, out, true, nil), err)
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", `format the output: "json" (the default) or a Go TEMPLATE run for each, e.g. '{{.Name}}'`)
	return cmd
}

// removeCmd is `X rm [-f] REF...`: removes each and prints what was
// removed; -f does not fail on what does not exist.
func removeCmd(c *cli, use, short string, remove func(*api.Client, context.Context, string) error) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     use,
		Aliases: []string{"remove"},
		Short:   short,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			return eachArg(args, func(ref string) error {
				err := remove(cl, cmd.Context(), ref)
				switch {
				case force && api.IsNotFound(err):
					return nil
				case err != nil:
					return err
				}
				fmt.Fprintln(c.stdout, ref)
				return nil
			}, c.stderr)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not fail on what does not exist")
	return cmd
}

// eachArg runs f for every argument, reporting failures on stderr and
// returning an error if any failed (as docker does for rm and inspect).
func eachArg(args []string, f func(string) error, stderr io.Writer) error {
	failed := 0
	for _, a := range args {
		if err := f(a); err != nil {
			if len(args) == 1 {
				return err
			}
			fmt.Fprintln(stderr, "Error:", err)
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d failed", failed, len(args))
	}
	return nil
}

// deprecatedJSON keeps a command's old --json flag working: it sets
// --format to json, with a warning.
func deprecatedJSON(cmd *cobra.Command, format *string) {
	cmd.Flags().Var(jsonFlag{format}, "json", "same as --format json")
	cmd.Flags().Lookup("json").NoOptDefVal = "true"
	mustFlag(cmd.Flags().MarkDeprecated("json", "use --format json"))
}

// jsonFlag is the old --json: a boolean flag that sets a --format.
type jsonFlag struct{ format *string }

func (f jsonFlag) String() string {
	if f.format != nil && *f.format == "json" {
		return "true"
	}
	return "false"
}

func (f jsonFlag) Set(v string) error {
	on, err := strconv.ParseBool(v)
	if on {
		*f.format = "json"
	}
	return err
}

func (jsonFlag) Type() string { return "bool" }

// mustFlag panics on an error of flag set-up, which only a programming
// error (a flag name that does not exist) causes.
func mustFlag(err error) {
	if err != nil {
		panic(err)
	}
}

func (c *cli) statusCmd() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the daemon's datapath, its attachments and the state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			s, err := cl.Status(cmd.Context())
			if err != nil {
				return err
			}
			return writeValue(c.stdout, format, []api.Status{s}, false, func() error {
				tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "Version:\t%s\nDatapath:\t%s\n", s.Version, s.Datapath)
				if s.DatapathReason != "" {
					fmt.Fprintf(tw, "Chosen because:\t%s\n", s.DatapathReason)
				}
				if s.ChainPrefix != "" {
					fmt.Fprintf(tw, "Chain prefix:\t%s\n", s.ChainPrefix)
				}
				if s.Attach != "" {
					fmt.Fprintf(tw, "Attach mode:\t%s\nbpffs:\t%s\nHost sockets (cgroup):\t%s\n", s.Attach, s.BPFFS, or(s.Cgroup, "none"))
				}
				fmt.Fprintf(tw, "State dir:\t%s\nUplinks:\t%s\nNetworks:\t%d\nEndpoints:\t%d\nEndpoints released:\t%d\nSpare veth pairs:\t%d waiting, %d taken\n",
					s.StateDir, strings.Join(s.Uplinks, ", "), s.Networks, s.Endpoints, s.EndpointsReleased, s.SpareVeths, s.SparesTaken)
				for _, w := range s.Warnings {
					fmt.Fprintf(tw, "WARNING:\t%s\n", w)
				}
				if len(s.Stats) > 0 {
					names := slices.Sorted(maps.Keys(s.Stats))
					fmt.Fprintf(tw, "\nSTAT\tVALUE\n")
					for _, n := range names {
						fmt.Fprintf(tw, "%s\t%d\n", n, s.Stats[n])
					}
				}
				if len(s.Attachments) > 0 {
					fmt.Fprintf(tw, "\nINTERFACE\tHOOK\tPROGRAM\tMODE\tPROGRAM ID\n")
					for _, a := range s.Attachments {
						mode := a.Mode
						if mode == "" {
							mode = "MISSING"
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", a.Interface, a.Hook, a.Program, mode, a.ProgramID)
					}
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&format, "format", "", `"json", or a Go TEMPLATE such as '{{.Datapath}}'`)
	deprecatedJSON(cmd, &format)
	return cmd
}

func (c *cli) compatCmd() *cobra.Command {
	cmd := group("compat", "iptables compatibility mode")
	var ipv6 bool
	render := &cobra.Command{
		Use:   "render",
		Short: "Print the iptables rules (iptables-save format) the compat mode emits for the current state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			out, err := cl.CompatRender(cmd.Context(), ipv6)
			fmt.Fprint(c.stdout, out)
			return err
		},
	}
	render.Flags().BoolVar(&ipv6, "ipv6", false, "print the ip6tables rules (ip6tables-save format) of the dual-stack networks instead")
	cmd.AddCommand(render)
	return cmd
}

// group is a command that only holds subcommands. Alone it prints its help,
// as `docker network` does; with an argument that names no subcommand it
// is a usage error (cobra would print help and exit 0).
func group(use, short string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unknown command %q for %q\nRun '%s --help' for the commands it has", args[0], cmd.CommandPath(), cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
}
