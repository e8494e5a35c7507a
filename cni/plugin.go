// Package cni is bpfnet's CNI plugin: containerd (alone, under
// Kubernetes' CRI, nerdctl) and Podman attach containers through it. It
// is thin: every verb is a call of bpfnetd's API, and bpfnetd owns the
// addresses, the state, the policy and the published ports, as for the
// CLI and Docker. It links none of netlink, BPF or iptables.
package cni

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/bpfnet/bpfnet/api"
)

// Runtime marks the endpoints the plugin made (api.Endpoint.Runtime), so
// GC removes only those.
const Runtime = "cni"

// timeout bounds each verb: a runtime waits for the plugin.
const timeout = 60 * time.Second

// Funcs are the verbs, for skel.PluginMainFuncs.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, GC: cmdGC, Status: cmdStatus}
}

// verb is what every verb starts from: the conf on stdin, a client of the
// daemon it names, and the verb's time limit (a runtime waits for it).
type verb struct {
	conf   *NetConf
	cl     *api.Client
	ctx    context.Context
	cancel context.CancelFunc
}

func start(args *skel.CmdArgs, limit time.Duration) (*verb, error) {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return nil, err
	}
	cl, err := api.NewClient("unix://" + conf.Socket)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "invalid socket", err.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	return &verb{conf: conf, cl: cl, ctx: ctx, cancel: cancel}, nil
}

// cniError turns an API error into a CNI error: bpfnetd's refusals keep
// its message; an unreachable daemon is "try again later".
func cniError(what string, err error) error {
	var se *api.StatusError
	var te *types.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &te):
		return te
	case errors.As(err, &se) && (se.Status == http.StatusBadRequest || se.Status == http.StatusConflict):
		return types.NewError(types.ErrInvalidNetworkConfig, what+": "+se.Message, "")
	case errors.As(err, &se) && se.Status == http.StatusNotFound:
		return types.NewError(types.ErrUnknownContainer, what+": "+se.Message, "")
	case errors.As(err, &se):
		return types.NewError(types.ErrInternal, what+": "+se.Message, "")
	}
	return types.NewError(types.ErrTryAgainLater, what+": "+err.Error(), "")
}

// ensureNetwork makes sure the conf's network exists, creating it from
// the conf when it does not; an existing network whose settings differ
// from the conf's is an error naming the differences.
func ensureNetwork(ctx context.Context, cl *api.Client, conf *NetConf) error {
	n, err := cl.Network(ctx, conf.Name)
	if api.IsNotFound(err) {
		n, err = cl.CreateNetwork(ctx, conf.networkRequest())
		var se *api.StatusError
		if errors.As(err, &se) && se.Status == http.StatusConflict {
			n, err = cl.Network(ctx, conf.Name) // another ADD made it meanwhile
		}
	}
	if err != nil {
		return cniError("network "+conf.Name, err)
	}
	if diff := conf.differences(n); len(diff) > 0 {
		return types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("network %s exists with other settings than the configuration's: %v", conf.Name, diff), "")
	}
	return nil
}

// findEndpoint returns the endpoint of a container's interface on the
// conf's network, if there is one.
func findEndpoint(ctx context.Context, cl *api.Client, network, containerID, ifname string) (*api.Endpoint, error) {
	if containerID == "" {
		return nil, nil // skel refuses a verb without CNI_CONTAINERID; no filter would list every endpoint
	}
	eps, err := cl.ContainerEndpoints(ctx, network, containerID)
	if err != nil {
		return nil, err
	}
	for _, ep := range eps {
		if ep.IfName == ifname {
			return &ep, nil
		}
	}
	return nil, nil
}

func cmdAdd(args *skel.CmdArgs) error {
	v, err := start(args, timeout)
	if err != nil {
		return err
	}
	defer v.cancel()
	conf, cl, ctx := v.conf, v.cl, v.ctx
	a, err := parseArgs(args.Args)
	if err != nil {
		return err
	}
	if args.Netns == "" {
		return types.NewError(types.ErrInvalidNetNS, "no network namespace (CNI_NETNS)", "")
	}
	ip, ip6, err := conf.requestedIPs(a)
	if err != nil {
		return err
	}
	if err := ensureNetwork(ctx, cl, conf); err != nil {
		return err
	}
	// An ADD after an ADD that failed late (or was lost) finds its
	// endpoint: it starts over.
	if old, err := findEndpoint(ctx, cl, conf.Name, args.ContainerID, args.IfName); err != nil {
		return cniError("endpoints", err)
	} else if old != nil {
		if err := cl.RemoveEndpoint(ctx, old.ID); err != nil && !api.IsNotFound(err) {
			return cniError("remove the earlier endpoint", err)
		}
	}
	ep, err := cl.CreateEndpoint(ctx, api.CreateEndpointRequest{Network: conf.Name, NetNS: args.Netns, IfName: args.IfName,
		Name: endpointName(a, args.ContainerID, args.IfName), IP: ip, IP6: ip6, MAC: conf.requestedMAC(a), Ports: conf.portSpecs(),
		ContainerID: args.ContainerID, Runtime: Runtime, Labels: labels(a)})
	if err != nil {
		return cniError("endpoint", err)
	}
	res, err := result(conf, ep, args.Netns)
	if err != nil {
		return err
	}
	return types.PrintResult(res, conf.CNIVersion)
}

// result is the ADD's result: the host veth and the container interface,
// the addresses with their gateways, the default routes when the endpoint
// has them, the conf's DNS; after what an earlier plugin in the chain gave.
func result(conf *NetConf, ep api.Endpoint, netns string) (types.Result, error) {
	res, err := prevResult(conf)
	if err != nil {
		return nil, err
	}
	if res == nil {
		res = &current.Result{CNIVersion: current.ImplementedSpecVersion}
	}
	hostIdx := len(res.Interfaces)
	res.Interfaces = append(res.Interfaces, &current.Interface{Name: ep.HostIf},
		&current.Interface{Name: ep.IfName, Mac: ep.MAC, Sandbox: netns})
	families := []struct {
		ip              netip.Addr
		subnet, gateway string
		def             string
	}{{ep.IP, ep.Subnet, ep.Gateway, "0.0.0.0/0"}, {ep.IP6, ep.Subnet6, ep.Gateway6, "::/0"}}
	for _, f := range families {
		if !f.ip.IsValid() {
			continue
		}
		_, subnet, err := net.ParseCIDR(f.subnet)
		if err != nil {
			return nil, types.NewError(types.ErrInternal, "endpoint's subnet", err.Error())
		}
		gw := net.ParseIP(f.gateway)
		res.IPs = append(res.IPs, &current.IPConfig{Interface: current.Int(hostIdx + 1),
			Address: net.IPNet{IP: f.ip.AsSlice(), Mask: subnet.Mask}, Gateway: gw})
		if ep.DefaultRoute {
			_, def, _ := net.ParseCIDR(f.def)
			res.Routes = append(res.Routes, &types.Route{Dst: *def, GW: gw})
		}
	}
	if len(conf.DNS.Nameservers) > 0 || len(conf.DNS.Search) > 0 {
		res.DNS = conf.DNS
	}
	return res, nil
}

// prevResult is what the plugins before bpfnet in the chain gave, as a
// current result; nil when bpfnet comes first.
func prevResult(conf *NetConf) (*current.Result, error) {
	if conf.RawPrevResult == nil {
		return nil, nil
	}
	pc := conf.PluginConf
	if err := version.ParsePrevResult(&pc); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "prevResult", err.Error())
	}
	prev, err := current.NewResultFromResult(pc.PrevResult)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "prevResult", err.Error())
	}
	return prev, nil
}

func cmdDel(args *skel.CmdArgs) error {
	v, err := start(args, timeout)
	if err != nil {
		return err
	}
	defer v.cancel()
	conf, cl, ctx := v.conf, v.cl, v.ctx
	// DEL is idempotent: no network, no endpoint, a namespace gone (the
	// kubelet's second DEL has none) all mean there is nothing to do.
	ep, err := findEndpoint(ctx, cl, conf.Name, args.ContainerID, args.IfName)
	if api.IsNotFound(err) || (err == nil && ep == nil) {
		return nil
	}
	if err != nil {
		return cniError("endpoints", err)
	}
	if err := cl.RemoveEndpoint(ctx, ep.ID); err != nil && !api.IsNotFound(err) {
		return cniError("remove endpoint "+ep.Name, err)
	}
	return nil
}

func cmdCheck(args *skel.CmdArgs) error {
	v, err := start(args, timeout)
	if err != nil {
		return err
	}
	defer v.cancel()
	conf, cl, ctx := v.conf, v.cl, v.ctx
	n, err := cl.Network(ctx, conf.Name)
	if err != nil {
		return cniError("network "+conf.Name, err)
	}
	if diff := conf.differences(n); len(diff) > 0 {
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("network %s differs from the configuration: %v", conf.Name, diff), "")
	}
	ep, err := findEndpoint(ctx, cl, conf.Name, args.ContainerID, args.IfName)
	if err != nil {
		return cniError("endpoints", err)
	}
	if ep == nil {
		return types.NewError(types.ErrUnknownContainer, fmt.Sprintf("no endpoint of container %s (%s) on network %s", args.ContainerID, args.IfName, conf.Name), "")
	}
	if ep.NetNS != args.Netns {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("endpoint %s is in %s, not %s", ep.Name, ep.NetNS, args.Netns), "")
	}
	prev, err := prevResult(conf)
	if err != nil {
		return err
	}
	for _, ip := range []netip.Addr{ep.IP, ep.IP6} {
		if prev != nil && ip.IsValid() && !slices.ContainsFunc(prev.IPs, func(c *current.IPConfig) bool { return c.Address.IP.Equal(ip.AsSlice()) }) {
			return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("endpoint %s has %s, which prevResult does not list", ep.Name, ip), "")
		}
	}
	return cniError("check endpoint "+ep.Name, cl.CheckEndpoint(ctx, ep.ID))
}

// cmdGC removes the plugin's endpoints on the conf's network that the
// runtime no longer knows (not in cni.dev/valid-attachments).
func cmdGC(args *skel.CmdArgs) error {
	v, err := start(args, timeout)
	if err != nil {
		return err
	}
	defer v.cancel()
	conf, cl, ctx := v.conf, v.cl, v.ctx
	eps, err := cl.Endpoints(ctx, conf.Name)
	if api.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return cniError("endpoints", err)
	}
	valid := map[types.GCAttachment]bool{}
	for _, a := range append(conf.ValidAttachments, conf.Attachments...) {
		valid[a] = true
	}
	var errs []error
	for _, ep := range eps {
		if ep.Runtime != Runtime || valid[types.GCAttachment{ContainerID: ep.ContainerID, IfName: ep.IfName}] {
			continue
		}
		if err := cl.RemoveEndpoint(ctx, ep.ID); err != nil && !api.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return cniError("garbage collection", errors.Join(errs...))
}

// cmdStatus fails while bpfnetd cannot take an ADD (not running, or not
// ready).
func cmdStatus(args *skel.CmdArgs) error {
	v, err := start(args, 10*time.Second)
	if err != nil {
		return err
	}
	defer v.cancel()
	conf, cl, ctx := v.conf, v.cl, v.ctx
	if _, err := cl.Status(ctx); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "bpfnetd is not available at "+conf.Socket, err.Error())
	}
	return nil
}
