// Command bpfnetd is the bpfnet host daemon: it owns the host's bridge
// networks and container endpoints and enforces their policy with the
// selected datapath. See docs/bpfnetd.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/bpfnet/bpfnet/api"
	"github.com/bpfnet/bpfnet/compat"
	"github.com/bpfnet/bpfnet/dockerdriver"
	"github.com/bpfnet/bpfnet/internal/version"
	"github.com/bpfnet/bpfnet/loader"
	"github.com/bpfnet/bpfnet/network"
)

// Config is bpfnetd's configuration, from flags.
type Config struct {
	Datapath    string
	TCAttach    string
	BPFFS       string
	NATPorts    [2]uint16
	ForwardRule bool
	Cgroup      string
	MetricsAddr string
	PerEndpoint bool
	StateDir    string
	Socket      string
	// SocketGID is the group that may use the API socket besides root
	// (--group; -1: root's group only).
	SocketGID      int
	DockerPlugin   string
	SpareVeths     int
	Uplinks        []string
	ChainPrefix    string
	DefaultNetwork bool
	Bridge         string
	BIP            string
	IPv6           bool
	FixedCIDRv6    string
	LogFormat      string
	Check          bool
	Cleanup        bool
	// PrintConfig is the effective configuration when --print-config was
	// given ("" otherwise).
	PrintConfig string
	// Settings are the effective values by flag name (flags over the
	// config file), which a reload compares; args is the command line it
	// parses again.
	Settings map[string]string
	args     []string
}

// errVersion ends parsing when --version was given (it is printed).
var errVersion = errors.New("version printed")

func parseFlags(args []string, stderr io.Writer) (Config, error) {
	var cfg Config
	var uplinks string
	fs := pflag.NewFlagSet("bpfnetd", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	fs.StringVar(&cfg.Datapath, "datapath", "auto", "datapath that enforces policy: ebpf, iptables, or auto (ebpf when the kernel can run it, else iptables; the log says why)")
	fs.StringVar(&cfg.TCAttach, "tc-attach", "auto", "how eBPF programs attach: tcx, tc (clsact qdisc + cls_bpf filter), or auto (tcx where the kernel has it, else tc)")
	fs.StringVar(&cfg.BPFFS, "bpffs", loader.DefaultRoot, "directory on a bpf filesystem for the eBPF datapath's pinned maps and links")
	natPorts := fs.String("nat-ports", "1024-65535", "eBPF datapath: port range (MIN-MAX) masqueraded flows may use; the original port is kept when it is in the range and free")
	fs.BoolVar(&cfg.ForwardRule, "forward-rule", true, "eBPF datapath: add one iptables FORWARD rule (and one in ip6tables with the first dual-stack network) accepting what the programs passed, for the traffic the fast paths cannot take (broadcast, multicast, fragments) on hosts whose FORWARD policy is DROP; false installs no iptables rule at all")
	fs.StringVar(&cfg.Cgroup, "cgroup", "auto", "eBPF datapath: cgroup v2 directory whose processes reach published ports through the host's own addresses (127.0.0.1:PORT, a bridge or uplink address); auto is the root of the cgroup2 mount (every process), none disables it")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "127.0.0.1:9476", "address of the Prometheus metrics listener (/metrics, /healthz, /readyz); empty disables it")
	fs.BoolVar(&cfg.PerEndpoint, "metrics-per-endpoint", true, "export per-endpoint series (bpfnet_endpoint_*); false keeps only the per-network totals, for hosts with very many endpoints")
	fs.StringVar(&cfg.StateDir, "state-dir", network.DefaultStateDir, "directory of the persisted state")
	fs.StringVar(&cfg.Socket, "socket", api.DefaultSocket, "path of the API unix socket (created with mode 0660)")
	group := fs.StringP("group", "G", "", "group owning the API socket, so that its members can use the CLI without root (as dockerd's -G); a name or a gid; empty: root only")
	fs.StringVar(&cfg.DockerPlugin, "docker-plugin", dockerdriver.DefaultSocket, "unix socket of the Docker network driver (Docker finds plugins in /run/docker/plugins; the file name is the driver's name); empty turns it off")
	fs.IntVar(&cfg.SpareVeths, "spare-veths", 4, "veth pairs kept made and attached ahead for the Docker driver's endpoints, from its first endpoint on (eBPF datapath with TCX: each spares a container start two RCU grace periods, about 25 ms); 0 keeps none")
	fs.StringVar(&uplinks, "uplink", "", "comma-separated uplink interfaces (default: the interfaces of the default routes)")
	fs.StringVar(&cfg.ChainPrefix, "chain-prefix", compat.DefaultPrefix, "prefix of the iptables chains (DOCKER reproduces Docker's rules exactly)")
	fs.BoolVar(&cfg.DefaultNetwork, "default-network", true, "create the default network \"bridge\"")
	fs.StringVar(&cfg.Bridge, "bridge", network.DefaultBridgeName, "bridge name of the default network")
	fs.StringVar(&cfg.BIP, "bip", "", "gateway address and prefix of the default network, e.g. 172.17.0.1/16 (default: first free Docker pool)")
	fs.BoolVar(&cfg.IPv6, "ipv6", false, "make the default network dual-stack (like dockerd's --ipv6; both datapaths enforce IPv6)")
	fs.StringVar(&cfg.FixedCIDRv6, "fixed-cidr-v6", "", "IPv6 subnet of the default network with --ipv6, e.g. fd00:d0c::/64 (default: a unique local /64)")
	fs.StringVar(&cfg.LogFormat, "log-format", "text", "log format: text or json")
	fs.BoolVar(&cfg.Check, "check", false, "check that the daemon can run here, print what it would do, and exit (0 ok, 1 not)")
	fs.BoolVar(&cfg.Cleanup, "cleanup", false, "remove every bridge, veth, rule and state file bpfnet created, and exit")
	configPath := fs.String("config", DefaultConfigFile, "YAML file of defaults for these flags (keys are flag names); flags given here win; a missing default file is fine")
	printCfg := fs.Bool("print-config", false, "print the effective configuration (flags over the config file) and exit")
	showVersion := fs.Bool("version", false, "print the version (release, commit, build date, Go version) and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: bpfnetd [flags]\n\nbpfnet host daemon (docs/bpfnetd.md). Flags:\n")
		fs.PrintDefaults()
	}
	err := fs.Parse(args)
	if err != nil {
		return cfg, err
	}
	if *showVersion {
		fmt.Fprintln(stderr, version.String("bpfnetd"))
		return cfg, errVersion
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := applyConfigFile(fs, *configPath, fs.Changed("config")); err != nil {
		return cfg, err
	}
	if *printCfg {
		cfg.PrintConfig = printConfig(fs)
	}
	cfg.Settings, cfg.args = settings(fs), args
	for _, u := range strings.Split(uplinks, ",") {
		if u = strings.TrimSpace(u); u != "" {
			cfg.Uplinks = append(cfg.Uplinks, u)
		}
	}
	switch cfg.Datapath {
	case "iptables", "auto", "ebpf":
	default:
		return cfg, fmt.Errorf("invalid --datapath %q: want auto, ebpf or iptables", cfg.Datapath)
	}
	if loader.ValidMode(cfg.TCAttach) != nil {
		return cfg, fmt.Errorf("invalid --tc-attach %q: want auto, tcx or tc", cfg.TCAttach)
	}
	if cfg.BIP != "" {
		if p, err := netip.ParsePrefix(cfg.BIP); err != nil || !p.Addr().Is4() {
			return cfg, fmt.Errorf("invalid --bip %q: want the gateway address with the prefix length, e.g. 172.17.0.1/16", cfg.BIP)
		}
	}
	if cfg.FixedCIDRv6 != "" {
		if !cfg.IPv6 {
			return cfg, fmt.Errorf("--fixed-cidr-v6 needs --ipv6")
		}
		if p, err := netip.ParsePrefix(cfg.FixedCIDRv6); err != nil || !p.Addr().Is6() || p.Addr().Is4In6() {
			return cfg, fmt.Errorf("invalid --fixed-cidr-v6 %q: want an IPv6 subnet, e.g. fd00:d0c::/64", cfg.FixedCIDRv6)
		}
	}
	if cfg.NATPorts, err = parsePortRange(*natPorts); err != nil {
		return cfg, err
	}
	if cfg.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(cfg.MetricsAddr); err != nil {
			return cfg, fmt.Errorf("invalid --metrics-addr %q: want HOST:PORT (or empty to disable)", cfg.MetricsAddr)
		}
	}
	if cfg.Cgroup != "auto" && cfg.Cgroup != "none" && !filepath.IsAbs(cfg.Cgroup) {
		return cfg, fmt.Errorf("invalid --cgroup %q: want auto, none or an absolute path", cfg.Cgroup)
	}
	if cfg.SpareVeths < 0 || cfg.SpareVeths > 64 {
		return cfg, fmt.Errorf("invalid --spare-veths %d: want 0 to 64", cfg.SpareVeths)
	}
	if cfg.DockerPlugin != "" && (!filepath.IsAbs(cfg.DockerPlugin) || !strings.HasSuffix(cfg.DockerPlugin, ".sock")) {
		return cfg, fmt.Errorf("invalid --docker-plugin %q: want an absolute path ending in .sock (or empty to turn it off)", cfg.DockerPlugin)
	}
	if !filepath.IsAbs(cfg.BPFFS) {
		return cfg, fmt.Errorf("invalid --bpffs %q: want an absolute path", cfg.BPFFS)
	}
	if cfg.SocketGID, err = groupID(*group); err != nil {
		return cfg, err
	}
	if cfg.LogFormat != "text" && cfg.LogFormat != "json" {
		return cfg, fmt.Errorf("invalid --log-format %q: want text or json", cfg.LogFormat)
	}
	if cfg.Check && cfg.Cleanup {
		return cfg, fmt.Errorf("--check and --cleanup exclude each other")
	}
	return cfg, nil
}

// parsePortRange parses MIN-MAX with 1 ≤ MIN ≤ MAX ≤ 65535.
// defaultNetwork is the default network's configuration (enabled or not).
func (cfg Config) defaultNetwork(enabled bool) network.DefaultNetworkConfig {
	return network.DefaultNetworkConfig{Enabled: enabled, Bridge: cfg.Bridge, BIP: cfg.BIP, IPv6: cfg.IPv6, FixedCIDRv6: cfg.FixedCIDRv6}
}

func parsePortRange(s string) ([2]uint16, error) {
	lo, hi, ok := strings.Cut(s, "-")
	a, err1 := strconv.ParseUint(lo, 10, 16)
	b, err2 := strconv.ParseUint(hi, 10, 16)
	if !ok || err1 != nil || err2 != nil || a == 0 || b < a {
		return [2]uint16{}, fmt.Errorf("invalid --nat-ports %q: want MIN-MAX with 1 <= MIN <= MAX <= 65535", s)
	}
	return [2]uint16{uint16(a), uint16(b)}, nil
}

func newLogger(format string, w io.Writer) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, pflag.ErrHelp) || errors.Is(err, errVersion) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bpfnetd:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, cfg, newLogger(cfg.LogFormat, os.Stderr), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bpfnetd:", err)
		os.Exit(1)
	}
}

// groupID resolves --group: a group name or a numeric gid; "" is -1.
func groupID(g string) (int, error) {
	if g == "" {
		return -1, nil
	}
	if gid, err := strconv.Atoi(g); err == nil && gid >= 0 {
		return gid, nil
	}
	grp, err := user.LookupGroup(g)
	if err != nil {
		return -1, fmt.Errorf("invalid --group %q: %w", g, err)
	}
	return strconv.Atoi(grp.Gid)
}
