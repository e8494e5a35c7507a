package main

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bpfnet/bpfnet/api"
)

// defaultBridgeOption marks the daemon's default network in inspect
// output, as Docker's does.
const defaultBridgeOption = "com.docker.network.bridge.default_bridge"

func (c *cli) networkCmd() *cobra.Command {
	cmd := group("network", "Manage networks")
	cmd.AddCommand(c.networkCreateCmd(), c.networkLsCmd(), c.networkInspectCmd(), c.networkRmCmd(), c.networkPruneCmd(),
		c.networkConnectCmd(), c.networkDisconnectCmd())
	return cmd
}

func (c *cli) networkCreateCmd() *cobra.Command {
	var req api.CreateNetworkRequest
	var opts, labels, aux, subnets, ranges, gateways []string
	var driver string
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a network",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if driver != "bridge" {
				return fmt.Errorf("driver %q is not supported: bpfnet networks are bridge networks", driver)
			}
			req.Name = args[0]
			var err error
			for _, f := range []struct {
				flag     string
				values   []string
				v4, v6   *string
				isPrefix bool
			}{
				{"subnet", subnets, &req.Subnet, &req.Subnet6, true},
				{"ip-range", ranges, &req.IPRange, &req.IPRange6, true},
				{"gateway", gateways, &req.Gateway, &req.Gateway6, false},
			} {
				if *f.v4, *f.v6, err = byFamily(f.flag, f.values, f.isPrefix); err != nil {
					return err
				}
			}
			if req.Options, err = keyValues("opt", opts, false); err != nil {
				return err
			}
			if req.Labels, err = keyValues("label", labels, true); err != nil {
				return err
			}
			if req.AuxAddresses, err = keyValues("aux-address", aux, false); err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			n, err := cl.CreateNetwork(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.stdout, n.ID)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&subnets, "subnet", nil, "subnet in CIDR form (default: next free Docker pool); with --ipv6 give it again for the IPv6 subnet (default: a unique local /64)")
	f.StringArrayVar(&ranges, "ip-range", nil, "allocate endpoint addresses from this sub-range (one per family)")
	f.StringArrayVar(&gateways, "gateway", nil, "gateway address (default: first address of the range; one per family)")
	f.BoolVar(&req.EnableIPv6, "ipv6", false, "make the network dual-stack: an IPv6 subnet besides the IPv4 one")
	f.StringArrayVar(&aux, "aux-address", nil, "reserve an address of the subnet, NAME=IP: never given to an endpoint (repeatable)")
	f.BoolVar(&req.Internal, "internal", false, "restrict traffic to the network's subnet and the host")
	f.BoolVar(&req.Attachable, "attachable", false, "accepted as Docker's flag is (bridge networks are always attachable); shown by inspect")
	f.StringArrayVarP(&opts, "opt", "o", nil, "driver option KEY=VALUE (repeatable)")
	f.StringArrayVar(&labels, "label", nil, "metadata KEY=VALUE or KEY (repeatable), shown by inspect, matched by ls --filter label=")
	f.StringVarP(&driver, "driver", "d", "bridge", "network driver: bridge, the only one")
	return cmd
}

// byFamily splits a flag given once per address family (Docker's --subnet,
// --ip-range, --gateway) into its IPv4 and its IPv6 value. A value that is
// neither is passed on as the IPv4 one, for the daemon's error message.
func byFamily(flag string, values []string, isPrefix bool) (v4, v6 string, err error) {
	for _, v := range values {
		addr := v
		if isPrefix {
			addr, _, _ = strings.Cut(v, "/")
		}
		a, perr := netip.ParseAddr(addr)
		target, fam := &v4, "IPv4"
		if perr == nil && a.Is6() && !a.Is4In6() {
			target, fam = &v6, "IPv6"
		}
		if *target != "" {
			return "", "", fmt.Errorf("invalid --%s %q: an %s --%s is given already (%s); give one per family", flag, v, fam, flag, *target)
		}
		*target = v
	}
	return v4, v6, nil
}

// keyValues parses KEY=VALUE flags into a map; bare KEY is allowed (with
// an empty value) where Docker allows it (labels).
func keyValues(flag string, kvs []string, bareKey bool) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if k == "" || !ok && !bareKey {
			return nil, fmt.Errorf("invalid --%s %q: want KEY=VALUE", flag, kv)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("invalid --%s %q: %s is given twice", flag, kv, k)
		}
		out[k] = v
	}
	return out, nil
}

// networkRow is a network as `network ls` prints it; its fields are the
// --format template's.
type networkRow struct {
	ID       string `header:"NETWORK ID"`
	Name     string
	Driver   string
	Scope    string
	Subnet   string
	Gateway  string
	Bridge   string
	Internal string
	IPv6     string
	meta
}

// meta is what every listed object has: labels and a creation time.
type meta struct {
	Labels    string
	CreatedAt string `header:"CREATED AT"`
	labels    map[string]string
}

func metaOf(labels map[string]string, created time.Time) meta {
	return meta{Labels: joinLabels(labels), labels: labels, CreatedAt: created.Local().Format("2006-01-02 15:04:05 -0700 MST")}
}

// Label is one label's value ({{.Label "KEY"}}).
func (m meta) Label(key string) string { return m.labels[key] }

func networkRowOf(n api.NetworkInspect, noTrunc bool) networkRow {
	r := networkRow{ID: shortID(n.ID, noTrunc), Name: n.Name, Driver: n.Driver, Scope: n.Scope, Bridge: n.Bridge,
		Internal: fmt.Sprint(n.Internal), IPv6: fmt.Sprint(n.EnableIPv6), meta: metaOf(n.Labels, n.Created)}
	if len(n.IPAM.Config) > 0 {
		r.Subnet, r.Gateway = n.IPAM.Config[0].Subnet, n.IPAM.Config[0].Gateway
	}
	return r
}

func shortID(id string, noTrunc bool) string {
	if noTrunc || len(id) <= 12 {
		return id
	}
	return id[:12]
}

func joinLabels(l map[string]string) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(l)) {
		out = append(out, k+"="+l[k])
	}
	return strings.Join(out, ",")
}

// networkFilters are `network ls` and `network prune` filters, as
// docker's: the values of one key are alternatives, keys all apply.
var networkFilters = map[string]func(n api.NetworkInspect, v string) (bool, error){
	"name":   func(n api.NetworkInspect, v string) (bool, error) { return strings.Contains(n.Name, v), nil },
	"id":     func(n api.NetworkInspect, v string) (bool, error) { return strings.HasPrefix(n.ID, v), nil },
	"driver": func(n api.NetworkInspect, v string) (bool, error) { return n.Driver == v, nil },
	"scope":  func(n api.NetworkInspect, v string) (bool, error) { return n.Scope == v, nil },
	"label":  func(n api.NetworkInspect, v string) (bool, error) { return hasLabel(n.Labels, v), nil },
	"type": func(n api.NetworkInspect, v string) (bool, error) {
		switch v {
		case "builtin", "custom":
			return (n.Options[defaultBridgeOption] == "true") == (v == "builtin"), nil
		}
		return false, fmt.Errorf("invalid filter 'type=%s': want builtin or custom", v)
	},
	"dangling": func(n api.NetworkInspect, v string) (bool, error) {
		switch v {
		case "true", "1", "false", "0":
			dangling := len(n.Containers) == 0 && n.Options[defaultBridgeOption] != "true"
			return dangling == (v == "true" || v == "1"), nil
		}
		return false, fmt.Errorf("invalid filter 'dangling=%s': want true or false", v)
	},
}

// hasLabel matches a label filter: KEY, or KEY=VALUE.
func hasLabel(labels map[string]string, f string) bool {
	k, v, withValue := strings.Cut(f, "=")
	got, ok := labels[k]
	return ok && (!withValue || got == v)
}

// filterSet is parsed --filter flags: values by key.
type filterSet map[string][]string

func parseFilters[T any](flags []string, known map[string]func(T, string) (bool, error)) (filterSet, error) {
	out := filterSet{}
	for _, f := range flags {
		k, v, ok := strings.Cut(f, "=")
		if _, valid := known[k]; !ok || !valid {
			return nil, fmt.Errorf("invalid filter '%s': the filters are %s", f, strings.Join(slices.Sorted(maps.Keys(known)), ", "))
		}
		out[k] = append(out[k], v)
	}
	return out, nil
}

// match reports whether item passes every key of fs (one of its values).
func match[T any](fs filterSet, known map[string]func(T, string) (bool, error), item T) (bool, error) {
	for k, vals := range fs {
		matched := false
		for _, v := range vals {
			ok, err := known[k](item, v)
			if err != nil {
				return false, err
			}
			matched = matched || ok
		}
		if !matched {
			return false, nil
		}
	}
	return true, nil
}

// filtered is items that pass fs.
func filtered[T any](fs filterSet, known map[string]func(T, string) (bool, error), items []T) ([]T, error) {
	var out []T
	for _, it := range items {
		ok, err := match(fs, known, it)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, it)
		}
	}
	return out, nil
}

func (c *cli) networkLsCmd() *cobra.Command {
	var quiet, noTrunc bool
	var format string
	var filters []string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List networks",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fs, err := parseFilters(filters, networkFilters)
			if err != nil {
				return err
			}
			_, nets, err := c.networks(cmd.Context(), fs, networkFilters)
			if err != nil {
				return err
			}
			if quiet {
				format = "{{.ID}}"
			}
			rows := make([]networkRow, len(nets))
			for i, n := range nets {
				rows[i] = networkRowOf(n, noTrunc)
			}
			return writeRows(c.stdout, format, `{{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}\t{{.Subnet}}\t{{.Bridge}}`, rows)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&quiet, "quiet", "q", false, "only print network ids")
	f.BoolVar(&noTrunc, "no-trunc", false, "do not truncate ids")
	f.StringVar(&format, "format", "", formatFlagUsage+"; fields: "+fieldsOf[networkRow]()+`, {{.Label "KEY"}}`)
	f.StringArrayVarP(&filters, "filter", "f", nil, "filter KEY=VALUE: name, id, driver, scope, label (KEY or KEY=VALUE), type (builtin|custom), dangling (true|false); repeatable")
	return cmd
}

// networks are the daemon's networks that pass fs, and the client that
// asked.
func (c *cli) networks(ctx context.Context, fs filterSet, known map[string]func(api.NetworkInspect, string) (bool, error)) (*api.Client, []api.NetworkInspect, error) {
	cl, err := c.client()
	if err != nil {
		return nil, nil, err
	}
	nets, err := cl.Networks(ctx)
	if err != nil {
		return nil, nil, err
	}
	nets, err = filtered(fs, known, nets)
	return cl, nets, err
}

func (c *cli) networkInspectCmd() *cobra.Command {
	cmd := inspectCmd(c, "inspect NETWORK...", "Show networks in detail (JSON, as docker network inspect)",
		func(ctx context.Context, cl *api.Client, ref string) (api.NetworkInspect, error) {
			return cl.Network(ctx, ref)
		})
	cmd.ValidArgsFunction = c.completeNetworks
	return cmd
}

func (c *cli) networkRmCmd() *cobra.Command {
	cmd := removeCmd(c, "rm NETWORK...", "Remove networks", (*api.Client).RemoveNetwork)
	cmd.ValidArgsFunction = c.completeNetworks
	return cmd
}

func (c *cli) networkPruneCmd() *cobra.Command {
	var force bool
	var filters []string
	pruneFilters := map[string]func(api.NetworkInspect, string) (bool, error){
		"label":  networkFilters["label"],
		"label!": func(n api.NetworkInspect, v string) (bool, error) { return !hasLabel(n.Labels, v), nil },
		"until": func(n api.NetworkInspect, v string) (bool, error) {
			t, err := untilTime(v)
			return n.Created.Before(t), err
		},
	}
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove all networks without endpoints (never the default network)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fs, err := parseFilters(filters, pruneFilters)
			if err != nil {
				return err
			}
			if !force {
				fmt.Fprint(c.stdout, "WARNING! This will remove all networks without endpoints.\nAre you sure you want to continue? [y/N] ")
				answer, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
					return nil
				}
			}
			cl, nets, err := c.networks(cmd.Context(), fs, pruneFilters)
			if err != nil {
				return err
			}
			var deleted []string
			var errs []string
			for _, n := range nets {
				if len(n.Containers) > 0 || n.Options[defaultBridgeOption] == "true" {
					continue
				}
				if err := cl.RemoveNetwork(cmd.Context(), n.ID); err != nil {
					// An endpoint may have arrived since the listing.
					errs = append(errs, err.Error())
					continue
				}
				deleted = append(deleted, n.Name)
			}
			if len(deleted) > 0 {
				fmt.Fprintln(c.stdout, "Deleted Networks:")
				for _, n := range deleted {
					fmt.Fprintln(c.stdout, n)
				}
			}
			if len(errs) > 0 {
				return fmt.Errorf("some networks were not removed: %s", strings.Join(errs, "; "))
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not prompt for confirmation")
	cmd.Flags().StringArrayVar(&filters, "filter", nil, "filter KEY=VALUE: label (KEY or KEY=VALUE), label! (without it), until (a duration such as 24h, or a time); repeatable")
	return cmd
}

// untilTime is a prune filter's until: a duration before now, or an
// RFC 3339 time or date.
func untilTime(v string) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil {
		return time.Now().Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, v, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("invalid filter 'until=%s': want a duration (24h) or a time (2006-01-02T15:04:05)", v)
}

// netnsPath is a CONTAINER argument as a namespace path: a path as given,
// a name as `ip netns` keeps it (/run/netns/NAME).
func netnsPath(arg string) string {
	if strings.Contains(arg, "/") {
		return arg
	}
	return "/run/netns/" + arg
}

func (c *cli) networkConnectCmd() *cobra.Command {
	var req api.CreateEndpointRequest
	var aliases []string
	cmd := &cobra.Command{
		Use:   "connect NETWORK CONTAINER",
		Short: "Connect a container (a network namespace: NAME under /run/netns, or a path) to a network",
		Long: "Connect a container to a network, as `docker network connect` does. CONTAINER is its network namespace:\n" +
			"a name as `ip netns` shows it, or a path (/proc/PID/ns/net). The interface is the first free ethN;\n" +
			"the endpoint is named after the namespace (NAME.NETWORK when the name is taken).",
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeConnect,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(aliases) > 0 {
				return fmt.Errorf("--alias names a container in the network's DNS, and bpfnet networks have no DNS server")
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			req.Network, req.NetNS = args[0], netnsPath(args[1])
			eps, err := cl.Endpoints(cmd.Context(), "")
			if err != nil {
				return err
			}
			req.Name, req.IfName = connectNames(eps, req.NetNS, args[0])
			ep, err := cl.CreateEndpoint(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.stdout, ep.ID)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.IP, "ip", "", "IPv4 address (default: first free in the network's range)")
	f.StringVar(&req.IP6, "ip6", "", "IPv6 address on a dual-stack network (default: first free in its IPv6 range)")
	f.StringVar(&req.MAC, "mac-address", "", "MAC address (default: 02:42 and the IPv4 address, as Docker)")
	f.StringArrayVar(&aliases, "alias", nil, "not supported: bpfnet networks have no DNS")
	return cmd
}

// connectNames are the endpoint's name and interface for `network
// connect`: the namespace's name (NAME.NETWORK when taken) and its first
// ethN that no endpoint uses.
func connectNames(eps []api.Endpoint, netns, network string) (name, ifname string) {
	names, ifnames := map[string]bool{}, map[string]bool{}
	for _, ep := range eps {
		names[ep.Name] = true
		if ep.NetNS == netns {
			ifnames[ep.IfName] = true
		}
	}
	name = strings.TrimPrefix(netns, "/run/netns/")
	if strings.Contains(name, "/") || names[name] {
		name = strings.ReplaceAll(strings.Trim(name, "/"), "/", "-") + "." + network
	}
	for i := 0; ; i++ {
		if ifname = fmt.Sprint("eth", i); !ifnames[ifname] {
			return name, ifname
		}
	}
}

func (c *cli) networkDisconnectCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:               "disconnect NETWORK CONTAINER",
		Short:             "Disconnect a container (its network namespace) from a network",
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeConnect,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			n, err := cl.Network(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			eps, err := cl.Endpoints(cmd.Context(), n.ID)
			if err != nil {
				return err
			}
			netns := netnsPath(args[1])
			removed := false
			for _, ep := range eps {
				if ep.NetNS != netns {
					continue
				}
				if err := cl.RemoveEndpoint(cmd.Context(), ep.ID); err != nil {
					return err
				}
				removed = true
			}
			if !removed && !force {
				return fmt.Errorf("container %s is not connected to network %s", args[1], n.Name)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not fail when the container is not connected")
	return cmd
}
