// Command bpfnet-cni is bpfnet's CNI plugin; `make install` puts it in
// /opt/cni/bin as bpfnet (a conf's "type"). It is a client of bpfnetd's
// API; see docs/cni.md.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	cniversion "github.com/containernetworking/cni/pkg/version"

	"github.com/bpfnet/bpfnet/cni"
	"github.com/bpfnet/bpfnet/internal/version"
)

func main() {
	// Debian's containerd 1.6 and Podman 4.3 reject 1.1.0 results: the
	// answer is in the version the conf asks for, down to 0.4.0.
	skel.PluginMainFuncs(cni.Funcs(), cniversion.PluginSupports("0.4.0", "1.0.0", "1.1.0"), version.String("bpfnet CNI plugin"))
}
