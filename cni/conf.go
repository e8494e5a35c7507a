package cni

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/bpfnet/bpfnet/api"
)

// NetConf is the plugin's configuration: CNI's fields and bpfnet's
// network settings (what `bpfnet network create` takes), camelCase as CNI
// configurations spell them. The conf's name is the bpfnet network.
type NetConf struct {
	types.PluginConf
	Subnet  string `json:"subnet,omitempty"`
	IPRange string `json:"ipRange,omitempty"`
	Gateway string `json:"gateway,omitempty"`
	// IPv6 makes the network dual-stack, with Subnet6 (a unique local
	// /64 when empty), IPRange6 and Gateway6 as their IPv4 fields.
	IPv6     bool              `json:"ipv6,omitempty"`
	Subnet6  string            `json:"subnet6,omitempty"`
	IPRange6 string            `json:"ipRange6,omitempty"`
	Gateway6 string            `json:"gateway6,omitempty"`
	Internal *bool             `json:"internal,omitempty"`
	Options  map[string]string `json:"options,omitempty"`
	// Socket is bpfnetd's API socket (default api.DefaultSocket).
	Socket        string        `json:"socket,omitempty"`
	RuntimeConfig RuntimeConfig `json:"runtimeConfig,omitempty"`
	// Args are the conventions' args (args.cni.ips, args.cni.mac).
	Args *Args `json:"args,omitempty"`
	// Attachments is the name libcni also gives GC's valid attachments
	// (the spec's is cni.dev/valid-attachments, in PluginConf).
	Attachments []types.GCAttachment `json:"cni.dev/attachments,omitempty"`
}

// Args are the CNI conventions' "args": bpfnet reads cni.ips and cni.mac
// and ignores the rest.
type Args struct {
	CNI struct {
		IPs []string `json:"ips,omitempty"`
		MAC string   `json:"mac,omitempty"`
	} `json:"cni"`
}

// UnmarshalJSON reads what it knows and ignores the rest.
func (a *Args) UnmarshalJSON(b []byte) error {
	type plain Args
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*a = Args(p)
	return nil
}

// RuntimeConfig is what the runtime adds for the capabilities the conf
// declares: portMappings (a pod's hostPorts), ips and mac. Others that a
// runtime sends (dns, aliases, ...) are ignored.
type RuntimeConfig struct {
	PortMappings []PortMapping `json:"portMappings,omitempty"`
	IPs          []string      `json:"ips,omitempty"`
	MAC          string        `json:"mac,omitempty"`
}

// UnmarshalJSON reads what it knows and ignores the rest: runtimes add
// keys for capabilities of other plugins in a chain.
func (r *RuntimeConfig) UnmarshalJSON(b []byte) error {
	type plain RuntimeConfig
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*r = RuntimeConfig(p)
	return nil
}

// PortMapping is the portMappings capability's entry (containerd 1.6
// capitalises the keys; JSON decoding takes both).
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol,omitempty"`
	HostIP        string `json:"hostIP,omitempty"`
}

// parseConf reads the configuration on stdin: unknown fields are an error
// (a typo would otherwise silently mean a default), and so is a type other
// than bpfnet's.
func parseConf(stdin []byte) (*NetConf, error) {
	var conf NetConf
	dec := json.NewDecoder(bytes.NewReader(stdin))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "invalid network configuration", err.Error())
	}
	if conf.Name == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "the network configuration has no name (it names the bpfnet network)", "")
	}
	if conf.Socket == "" {
		conf.Socket = api.DefaultSocket
	}
	for _, pm := range conf.RuntimeConfig.PortMappings {
		if pm.HostPort < 1 || pm.HostPort > 65535 || pm.ContainerPort < 1 || pm.ContainerPort > 65535 {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("invalid port mapping %+v: ports are 1-65535", pm), "")
		}
	}
	return &conf, nil
}

// networkRequest is the request the conf makes the network from when it
// does not exist yet.
func (c *NetConf) networkRequest() api.CreateNetworkRequest {
	req := api.CreateNetworkRequest{Name: c.Name, Subnet: c.Subnet, IPRange: c.IPRange, Gateway: c.Gateway, Options: c.Options,
		EnableIPv6: c.IPv6, Subnet6: c.Subnet6, IPRange6: c.IPRange6, Gateway6: c.Gateway6}
	if c.Internal != nil {
		req.Internal = *c.Internal
	}
	return req
}

// optionDefaults are the values options have when a network was made
// without them (Docker's defaults).
var optionDefaults = map[string]string{
	"com.docker.network.bridge.enable_icc":           "true",
	"com.docker.network.bridge.enable_ip_masquerade": "true",
	"com.docker.network.bridge.host_binding_ipv4":    "0.0.0.0",
	"com.docker.network.driver.mtu":                  "1500",
}

// differences lists what the conf asks for that the existing network n
// does not have; what the conf leaves out is not compared.
func (c *NetConf) differences(n api.NetworkInspect) []string {
	var diff []string
	cfgs := [2]api.IPAMConfig{}
	copy(cfgs[:], n.IPAM.Config)
	if c.IPv6 != n.EnableIPv6 {
		diff = append(diff, fmt.Sprintf("ipv6 %v (the network has %v)", c.IPv6, n.EnableIPv6))
	}
	for i, f := range []struct{ suffix, subnet, ipRange, gateway string }{{"", c.Subnet, c.IPRange, c.Gateway}, {"6", c.Subnet6, c.IPRange6, c.Gateway6}} {
		cfg := cfgs[i]
		if f.subnet != "" && f.subnet != cfg.Subnet {
			diff = append(diff, fmt.Sprintf("subnet%s %s (the network has %s)", f.suffix, f.subnet, or(cfg.Subnet, "none")))
		}
		if f.ipRange != "" && f.ipRange != cfg.IPRange {
			diff = append(diff, fmt.Sprintf("ipRange%s %s (the network has %s)", f.suffix, f.ipRange, or(cfg.IPRange, "none")))
		}
		if f.gateway != "" && f.gateway != cfg.Gateway {
			diff = append(diff, fmt.Sprintf("gateway%s %s (the network has %s)", f.suffix, f.gateway, or(cfg.Gateway, "none")))
		}
	}
	if c.Internal != nil && *c.Internal != n.Internal {
		diff = append(diff, fmt.Sprintf("internal %v (the network has %v)", *c.Internal, n.Internal))
	}
	for k, v := range c.Options {
		have, ok := n.Options[k]
		if !ok {
			have = optionDefaults[k]
		}
		if !strings.EqualFold(v, have) {
			diff = append(diff, fmt.Sprintf("option %s=%s (the network has %q)", k, v, have))
		}
	}
	return diff
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// envArgs are the CNI_ARGS bpfnet reads: Kubernetes' pod, and Podman's
// --ip and --mac-address.
type envArgs struct {
	types.CommonArgs
	IP                types.UnmarshallableString
	MAC               types.UnmarshallableString
	K8S_POD_NAMESPACE types.UnmarshallableString //nolint:revive,staticcheck // CNI_ARGS' key
	K8S_POD_NAME      types.UnmarshallableString //nolint:revive,staticcheck // CNI_ARGS' key
}

func parseArgs(s string) (envArgs, error) {
	var a envArgs
	if err := types.LoadArgs(s, &a); err != nil {
		return a, types.NewError(types.ErrInvalidEnvironmentVariables, "invalid CNI_ARGS", err.Error())
	}
	return a, nil
}

var unsafeName = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// endpointName is the endpoint's name in bpfnet: the pod's namespace and
// name when Kubernetes says (so `bpfnet endpoint ls` and the metrics name
// the pod), else "cni-" and the container id's first 12 characters; an
// interface other than eth0 adds its name.
func endpointName(a envArgs, containerID, ifname string) string {
	name := "cni-" + containerID
	if len(containerID) > 12 {
		name = "cni-" + containerID[:12]
	}
	if a.K8S_POD_NAME != "" {
		name = string(a.K8S_POD_NAMESPACE) + "." + string(a.K8S_POD_NAME)
	}
	if ifname != "eth0" {
		name += "." + ifname
	}
	name = unsafeName.ReplaceAllString(name, "-")
	return strings.TrimLeft(name, "-_.")
}

// labels are the endpoint's labels: the pod, when Kubernetes says.
func labels(a envArgs) map[string]string {
	if a.K8S_POD_NAME == "" {
		return nil
	}
	return map[string]string{"io.kubernetes.pod.namespace": string(a.K8S_POD_NAMESPACE), "io.kubernetes.pod.name": string(a.K8S_POD_NAME)}
}

// requestedIPs are the addresses asked for, at most one per family: the
// ips capability, the conventions' args, or Podman's CNI_ARGS IP.
func (c *NetConf) requestedIPs(a envArgs) (ip, ip6 string, err error) {
	ips := c.RuntimeConfig.IPs
	if c.Args != nil && len(ips) == 0 {
		ips = c.Args.CNI.IPs
	}
	if len(ips) == 0 && a.IP != "" {
		ips = []string{string(a.IP)}
	}
	for _, s := range ips {
		addr := s
		if i := strings.IndexByte(addr, '/'); i >= 0 {
			addr = addr[:i] // the ips capability may carry a prefix length
		}
		p := net.ParseIP(addr)
		target := &ip
		switch {
		case p == nil:
			return "", "", types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("invalid address %q", s), "")
		case p.To4() == nil:
			target = &ip6
		}
		if *target != "" {
			return "", "", types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("addresses %s and %s requested: a bpfnet endpoint has one per family", *target, addr), "")
		}
		*target = addr
	}
	return ip, ip6, nil
}

// requestedMAC is the MAC asked for: the mac capability, the conventions'
// args, or Podman's CNI_ARGS MAC.
func (c *NetConf) requestedMAC(a envArgs) string {
	switch {
	case c.RuntimeConfig.MAC != "":
		return c.RuntimeConfig.MAC
	case c.Args != nil && c.Args.CNI.MAC != "":
		return c.Args.CNI.MAC
	}
	return string(a.MAC)
}

// portSpecs are the port mappings as `-p` specs.
func (c *NetConf) portSpecs() []string {
	var out []string
	for _, pm := range c.RuntimeConfig.PortMappings {
		proto := strings.ToLower(or(pm.Protocol, "tcp"))
		spec := fmt.Sprintf("%d:%d/%s", pm.HostPort, pm.ContainerPort, proto)
		if pm.HostIP != "" && pm.HostIP != "0.0.0.0" {
			spec = pm.HostIP + ":" + spec
		}
		out = append(out, spec)
	}
	return out
}
