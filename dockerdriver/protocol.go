package dockerdriver

// The JSON of Docker's remote network driver protocol (libnetwork
// docs/remote.md, drivers/remote/api), as Docker Engine 20.10 sends it.

// Option keys Docker puts in the Options of its calls (libnetwork
// netlabel).
const (
	optGeneric    = "com.docker.network.generic"
	optInternal   = "com.docker.network.internal"
	optEnableIPv6 = "com.docker.network.enable_ipv6"
	optPortMap    = "com.docker.network.portmap"
	optMACAddress = "com.docker.network.endpoint.macaddress"
)

// errorResponse is every call's answer on failure.
type errorResponse struct {
	Err string
}

type activateResponse struct {
	Implements []string
}

type capabilitiesResponse struct {
	Scope             string
	ConnectivityScope string
}

// ipamData is one address pool of a network, as Docker's IPAM assigned it;
// Gateway and the aux addresses are in CIDR form (10.1.0.1/24).
type ipamData struct {
	AddressSpace string
	Pool         string
	Gateway      string
	AuxAddresses map[string]string
}

type createNetworkRequest struct {
	NetworkID string
	Options   map[string]any
	IPv4Data  []ipamData
	IPv6Data  []ipamData
}

type networkRequest struct {
	NetworkID string
}

type endpointInterface struct {
	Address     string `json:",omitempty"`
	AddressIPv6 string `json:",omitempty"`
	MacAddress  string `json:",omitempty"`
}

type createEndpointRequest struct {
	NetworkID  string
	EndpointID string
	Interface  *endpointInterface
	Options    map[string]any
}

type createEndpointResponse struct {
	Interface *endpointInterface `json:",omitempty"`
}

// endpointRequest is the body of DeleteEndpoint, EndpointOperInfo, Leave
// and RevokeExternalConnectivity.
type endpointRequest struct {
	NetworkID  string
	EndpointID string
}

type endpointInfoResponse struct {
	Value map[string]any
}

type joinRequest struct {
	NetworkID  string
	EndpointID string
	SandboxKey string
	Options    map[string]any
}

type interfaceName struct {
	SrcName   string
	DstPrefix string
}

type joinResponse struct {
	InterfaceName         interfaceName
	Gateway               string
	GatewayIPv6           string `json:",omitempty"`
	DisableGatewayService bool
}

type connectivityRequest struct {
	NetworkID  string
	EndpointID string
	Options    map[string]any
}

// portBinding is libnetwork's types.PortBinding: Proto is the IP protocol
// number (6 tcp, 17 udp), IP the container's address, HostPortEnd the end
// of a host port range of which one port is wanted.
type portBinding struct {
	Proto       int
	IP          string
	Port        uint16
	HostIP      string
	HostPort    uint16
	HostPortEnd uint16
}
