package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/spf13/cobra"
)

// The canned daemon's answers, written by hand in the API's JSON (the
// names of api's types), so every expectation below is independent of the
// CLI's code.
const (
	bridgeID = "1111111111111111111111111111111111111111111111111111111111111111"
	webID    = "2222222222222222222222222222222222222222222222222222222222222222"
	idleID   = "3333333333333333333333333333333333333333333333333333333333333333"
	epID     = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

	cannedNetworks = `[
 {"Name":"bridge","Id":"` + bridgeID + `","Created":"2026-12-01T10:00:00Z","Scope":"local","Driver":"bridge",
  "IPAM":{"Driver":"default","Config":[{"Subnet":"172.17.0.0/16","Gateway":"172.17.0.1"}]},
  "Containers":{},"Options":{"com.docker.network.bridge.default_bridge":"true"},"Labels":{},"Bridge":"bpfnet0"},
 {"Name":"web","Id":"` + webID + `","Created":"2026-12-01T11:00:00Z","Scope":"local","Driver":"bridge",
  "IPAM":{"Driver":"default","Config":[{"Subnet":"172.18.0.0/16","Gateway":"172.18.0.1"}]},
  "Containers":{"` + epID + `":{"Name":"c1","EndpointID":"` + epID + `"}},"Options":{},"Labels":{"env":"prod"},"Bridge":"br-222222222222"},
 {"Name":"idle","Id":"` + idleID + `","Created":"2026-12-01T12:00:00Z","Scope":"local","Driver":"bridge",
  "IPAM":{"Driver":"default","Config":[{"Subnet":"172.19.0.0/16","Gateway":"172.19.0.1"}]},
  "Containers":{},"Options":{},"Labels":{"tier":"db"},"Bridge":"br-333333333333"}]`
	cannedEndpoints = `[
 {"Id":"` + epID + `","Name":"c1","NetworkID":"` + webID + `","Network":"web","Created":"2026-12-01T11:05:00Z",
  "NetNS":"/run/netns/c1","IfName":"eth0","HostIf":"bpv1aaaaaaaaaa","IP":"172.18.0.2","MAC":"02:42:ac:12:00:02",
  "Ports":[{"Proto":"tcp","HostIP":"0.0.0.0","HostPort":8080,"Port":80}],"Subnet":"172.18.0.0/16","Gateway":"172.18.0.1",
  "Counters":{"FromContainer":{"Packets":10,"Bytes":1000,"Drops":{"icc":2}},"ToContainer":{"Packets":7,"Bytes":700,"Drops":{"spoof":1}}}}]`
	cannedVersion = `{"Version":"v1.2.3","Commit":"abc","Built":"2026-12-01","GoVersion":"go1.26","Os":"linux","Arch":"amd64"}`
	cannedStatus  = `{"Version":"v1.2.3","Datapath":"ebpf","Attach":"tcx","StateDir":"/var/lib/bpfnet","Uplinks":["eth0"],"Networks":3,"Endpoints":1}`
	cannedNAT     = `[{"Kind":"masquerade","Proto":"tcp","Container":"172.18.0.2:40000","Translated":"10.0.0.1:40000","Remote":"10.0.0.9:443","State":"established","AgeSeconds":65,"IdleSeconds":2}]`
)

// canned is a fake bpfnetd on a unix socket; it records what it is asked
// to change.
type canned struct {
	sock string
	mu   sync.Mutex
	log  []string // "METHOD PATH BODY"
}

func newCanned(t *testing.T) *canned {
	t.Helper()
	c := &canned{sock: filepath.Join(t.TempDir(), "bpfnet.sock")}
	l, err := net.Listen("unix", c.sock)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]json.RawMessage{}
	var nets []json.RawMessage
	if err := json.Unmarshal([]byte(cannedNetworks), &nets); err != nil {
		t.Fatal(err)
	}
	for _, n := range nets {
		var x struct{ Name, ID string }
		json.Unmarshal(n, &x)
		byName[x.Name], byName[x.ID] = n, n
	}
	mux := http.NewServeMux()
	text := func(s string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, s) }
	}
	notFound := func(w http.ResponseWriter, what string) {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"message":"`+what+` not found"}`)
	}
	mux.HandleFunc("GET /v1/networks", text(cannedNetworks))
	mux.HandleFunc("GET /v1/endpoints", text(cannedEndpoints))
	mux.HandleFunc("GET /v1/version", text(cannedVersion))
	mux.HandleFunc("GET /v1/status", text(cannedStatus))
	mux.HandleFunc("GET /v1/nat", text(cannedNAT))
	mux.HandleFunc("GET /v1/networks/{ref}", func(w http.ResponseWriter, r *http.Request) {
		if n, ok := byName[r.PathValue("ref")]; ok {
			w.Write(n)
			return
		}
		notFound(w, "network "+r.PathValue("ref"))
	})
	mux.HandleFunc("GET /v1/endpoints/{ref}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("ref") != "c1" {
			notFound(w, "endpoint "+r.PathValue("ref"))
			return
		}
		io.WriteString(w, strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(cannedEndpoints), "["), "]"))
	})
	change := func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		c.log = append(c.log, strings.TrimSpace(r.Method+" "+r.URL.Path+" "+string(b)))
		c.mu.Unlock()
		switch {
		case r.Method == "DELETE" && strings.HasPrefix(r.URL.Path, "/v1/networks/") && byName[r.PathValue("ref")] == nil:
			notFound(w, "network "+r.PathValue("ref"))
		case r.Method == "DELETE":
			w.WriteHeader(http.StatusNoContent)
		case r.URL.Path == "/v1/networks":
			w.Write(byName["idle"])
		default:
			io.WriteString(w, `{"Id":"`+epID+`"}`)
		}
	}
	mux.HandleFunc("POST /v1/networks", change)
	mux.HandleFunc("POST /v1/endpoints", change)
	mux.HandleFunc("DELETE /v1/networks/{ref}", change)
	mux.HandleFunc("DELETE /v1/endpoints/{ref}", change)
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: mux}}
	srv.Start()
	t.Cleanup(srv.Close)
	return c
}

func (c *canned) changes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.log
	c.log = nil
	return out
}

// run runs the CLI against the canned daemon with stdin.
func (c *canned) run(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRoot(&out, &errOut)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(append([]string{"-H", "unix://" + c.sock}, args...))
	err := root.Execute()
	return out.String(), err
}

// Each command's output in each --format, written out by hand from the
// canned answers above and docker's conventions (tables padded by three
// spaces, ids cut to 12 digits, "json" one object per line for lists).
func TestFormats(t *testing.T) {
	c := newCanned(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"network", "ls"}, "" +
			"NETWORK ID     NAME     DRIVER   SCOPE   SUBNET          BRIDGE\n" +
			"111111111111   bridge   bridge   local   172.17.0.0/16   bpfnet0\n" +
			"222222222222   web      bridge   local   172.18.0.0/16   br-222222222222\n" +
			"333333333333   idle     bridge   local   172.19.0.0/16   br-333333333333\n"},
		{[]string{"network", "ls", "-q"}, "111111111111\n222222222222\n333333333333\n"},
		{[]string{"network", "ls", "-q", "--no-trunc", "--filter", "name=web"}, webID + "\n"},
		{[]string{"network", "ls", "--format", `{{.Name}}={{.Label "env"}}`}, "bridge=\nweb=prod\nidle=\n"},
		{[]string{"network", "ls", "--format", `table {{.Name}}\t{{.Labels}}`}, "NAME     LABELS\nbridge   \nweb      env=prod\nidle     tier=db\n"},
		{[]string{"network", "ls", "--format", "{{.Name}}", "--filter", "label=env=prod"}, "web\n"},
		{[]string{"network", "ls", "--format", "{{.Name}}", "--filter", "label=tier"}, "idle\n"},
		{[]string{"network", "ls", "--format", "{{.Name}}", "--filter", "dangling=true"}, "idle\n"},
		{[]string{"network", "ls", "--format", "{{.Name}}", "--filter", "dangling=false"}, "bridge\nweb\n"},
		{[]string{"network", "ls", "--format", "{{.Name}}", "--filter", "type=builtin"}, "bridge\n"},
		{[]string{"network", "ls", "--format", "{{.Name}}", "--filter", "name=we", "--filter", "name=dl"}, "web\nidle\n"},
		{[]string{"network", "ls", "--format", "{{.Name}}", "--filter", "name=e", "--filter", "id=3"}, "idle\n"},
		{[]string{"network", "inspect", "--format", "{{.Name}} {{(index .IPAM.Config 0).Gateway}} {{json .Labels}}", "web", "idle"},
			"web 172.18.0.1 {\"env\":\"prod\"}\nidle 172.19.0.1 {\"tier\":\"db\"}\n"},
		{[]string{"endpoint", "ls"}, "" +
			"ENDPOINT ID    NAME   NETWORK   IP           PORTS\n" +
			"aaaaaaaaaaaa   c1     web       172.18.0.2   0.0.0.0:8080->80/tcp\n"},
		{[]string{"endpoint", "ls", "--format", "{{.Name}} rx={{.RxPackets}} tx={{.TxBytes}} drops={{.Drops}} {{.HostIf}}"},
			"c1 rx=7 tx=1000 drops=3 bpv1aaaaaaaaaa\n"},
		{[]string{"endpoint", "ls", "--format", "{{.Name}}", "--filter", "network=idle"}, ""},
		{[]string{"endpoint", "inspect", "--format", "{{.HostIf}} {{.Counters.ToContainer.Packets}}", "c1"}, "bpv1aaaaaaaaaa 7\n"},
		{[]string{"nat", "ls"}, "" +
			"KIND         PROTO   CONTAINER          TRANSLATED       REMOTE         STATE         AGE    IDLE\n" +
			"masquerade   tcp     172.18.0.2:40000   10.0.0.1:40000   10.0.0.9:443   established   1m5s   2s\n"},
		{[]string{"status", "--format", "{{.Datapath}}/{{.Attach}} {{.Networks}}"}, "ebpf/tcx 3\n"},
		{[]string{"version", "--format", "{{.Server.Version}} {{.Server.Commit}}"}, "v1.2.3 abc\n"},
	} {
		got, err := c.run(t, "", tc.args...)
		if err != nil || got != tc.want {
			t.Errorf("bpfnet %s: %v\n got %q\nwant %q", strings.Join(tc.args, " "), err, got, tc.want)
		}
	}

	// json: lists print one object per line, inspect a JSON array whose
	// keys are Go's field names (CamelCase, as docker's).
	out, err := c.run(t, "", "network", "ls", "--format", "json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) != 3 {
		t.Fatalf("network ls --format json: %v\n%s", err, out)
	}
	var row struct{ ID, Name, Subnet string }
	if err := json.Unmarshal([]byte(lines[1]), &row); err != nil || row.ID != webID[:12] || row.Name != "web" || row.Subnet != "172.18.0.0/16" {
		t.Errorf("network ls --format json, second line %s: %+v %v", lines[1], row, err)
	}
	out, err = c.run(t, "", "endpoint", "inspect", "c1")
	if err != nil || !strings.Contains(out, `"HostIf": "bpv1aaaaaaaaaa"`) || !strings.Contains(out, `"FromContainer": {`) || strings.Contains(out, "host_if") {
		t.Errorf("endpoint inspect: %v, want CamelCase keys:\n%s", err, out)
	}
	if out, err := c.run(t, "", "status", "--json"); err != nil || !strings.Contains(out, `"Datapath": "ebpf"`) {
		t.Errorf("status --json (deprecated, as --format json): %v\n%s", err, out)
	}
	// The default endpoint view fits an 80-column terminal; --no-trunc
	// has every column.
	out, _ = c.run(t, "", "endpoint", "ls")
	for _, l := range strings.Split(out, "\n") {
		if len(l) > 80 {
			t.Errorf("endpoint ls line of %d columns: %q", len(l), l)
		}
	}
	out, _ = c.run(t, "", "endpoint", "ls", "--no-trunc")
	for _, col := range []string{"ENDPOINT ID", "MAC", "HOST IF", "NETNS", "IFNAME", "RX PKTS", "RX BYTES", "TX PKTS", "TX BYTES", "DROPS", epID, "/run/netns/c1"} {
		if !strings.Contains(out, col) {
			t.Errorf("endpoint ls --no-trunc has no %q:\n%s", col, out)
		}
	}
	if c.changes() != nil {
		t.Error("a listing changed something")
	}
}

// The commands that change something send what docker's flags mean.
func TestChanges(t *testing.T) {
	c := newCanned(t)
	for _, tc := range []struct {
		stdin string
		args  []string
		out   string
		err   string
		sent  []string
	}{
		{"", []string{"network", "create", "--label", "env=test", "--label", "bare", "--aux-address", "router=172.19.0.5", "--attachable", "--subnet", "172.19.0.0/16", "x"},
			idleID + "\n", "",
			[]string{`POST /v1/networks {"Name":"x","Subnet":"172.19.0.0/16","AuxAddresses":{"router":"172.19.0.5"},"Labels":{"bare":"","env":"test"},"Attachable":true}`}},
		{"", []string{"network", "rm", "web", "idle"}, "web\nidle\n", "", []string{"DELETE /v1/networks/web", "DELETE /v1/networks/idle"}},
		{"", []string{"network", "rm", "gone"}, "", "network gone not found", []string{"DELETE /v1/networks/gone"}},
		{"", []string{"network", "rm", "-f", "gone", "web"}, "web\n", "", []string{"DELETE /v1/networks/gone", "DELETE /v1/networks/web"}},
		// prune: only idle (bridge is the default network, web has an
		// endpoint); without -f it asks, and only "y" goes on.
		{"n\n", []string{"network", "prune"}, "WARNING! This will remove all networks without endpoints.\nAre you sure you want to continue? [y/N] ", "", nil},
		{"y\n", []string{"network", "prune"}, "WARNING! This will remove all networks without endpoints.\nAre you sure you want to continue? [y/N] Deleted Networks:\nidle\n", "",
			[]string{"DELETE /v1/networks/" + idleID}},
		{"", []string{"network", "prune", "-f", "--filter", "label=tier=db"}, "Deleted Networks:\nidle\n", "", []string{"DELETE /v1/networks/" + idleID}},
		{"", []string{"network", "prune", "-f", "--filter", "label!=tier"}, "", "", nil},
		{"", []string{"network", "prune", "-f", "--filter", "until=2026-12-01T11:30:00Z"}, "", "", nil},
		// connect: c1 is taken as a name and has eth0 already.
		{"", []string{"network", "connect", "--ip", "172.19.0.9", "--mac-address", "02:00:00:00:00:09", "idle", "c1"}, epID + "\n", "",
			[]string{`POST /v1/endpoints {"Network":"idle","NetNS":"/run/netns/c1","IP":"172.19.0.9","IfName":"eth1","Name":"c1.idle","MAC":"02:00:00:00:00:09"}`}},
		{"", []string{"network", "connect", "web", "/proc/42/ns/net"}, epID + "\n", "",
			[]string{`POST /v1/endpoints {"Network":"web","NetNS":"/proc/42/ns/net","IfName":"eth0","Name":"proc-42-ns-net.web"}`}},
		{"", []string{"network", "disconnect", "web", "c1"}, "", "", []string{"DELETE /v1/endpoints/" + epID}},
		{"", []string{"network", "disconnect", "web", "c9"}, "", "container c9 is not connected to network web", nil},
		{"", []string{"network", "disconnect", "-f", "web", "c9"}, "", "", nil},
	} {
		out, err := c.run(t, tc.stdin, tc.args...)
		sent := c.changes()
		switch {
		case tc.err == "" && err != nil, tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("bpfnet %s: error %v, want %q", strings.Join(tc.args, " "), err, tc.err)
		case out != tc.out:
			t.Errorf("bpfnet %s printed %q, want %q", strings.Join(tc.args, " "), out, tc.out)
		case strings.Join(sent, "\n") != strings.Join(tc.sent, "\n"):
			t.Errorf("bpfnet %s sent\n%s\nwant\n%s", strings.Join(tc.args, " "), strings.Join(sent, "\n"), strings.Join(tc.sent, "\n"))
		}
	}
}

// Shell completion asks the daemon for names.
func TestCompletion(t *testing.T) {
	c := newCanned(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"network", "inspect", ""}, "bridge\nweb\nidle\n:4\n"},
		{[]string{"network", "rm", "web", "i"}, "idle\n:4\n"},
		{[]string{"network", "connect", "w"}, "web\n:4\n"},
		{[]string{"endpoint", "rm", ""}, "c1\n:4\n"},
		{[]string{"endpoint", "create", "--network", "b"}, "bridge\n:4\n"},
	} {
		out, err := c.run(t, "", append([]string{"__complete"}, tc.args...)...)
		// cobra ends with a line for the shell script on stderr, the
		// candidates and ":DIRECTIVE" on stdout.
		if err != nil || out != tc.want {
			t.Errorf("completion of %q: %v %q, want %q", tc.args, err, out, tc.want)
		}
	}
}

var update = flag.Bool("update", false, "rewrite the help goldens in testdata/help")

// Every command's --help is the golden in testdata/help (the reference for
// docs/bpfnet.md; go test -update rewrites them after a deliberate
// change), and a man page exists for each.
func TestHelp(t *testing.T) {
	t.Setenv("BPFNET_HOST", "") // the -H default is in the help
	root := newRoot(io.Discard, io.Discard)
	var cmds [][]string
	var walk func(path []string, cmd *cobra.Command)
	walk = func(path []string, cmd *cobra.Command) {
		if cmd.Hidden || cmd.Name() == "help" {
			return
		}
		cmds = append(cmds, path)
		for _, sub := range cmd.Commands() {
			walk(append(append([]string{}, path...), sub.Name()), sub)
		}
	}
	walk(nil, root)
	for _, path := range cmds {
		var out bytes.Buffer
		r := newRoot(&out, &out)
		r.SetArgs(append(path, "--help"))
		if err := r.Execute(); err != nil {
			t.Errorf("%v --help: %v", path, err)
			continue
		}
		golden := filepath.Join("testdata", "help", strings.Join(append([]string{"bpfnet"}, path...), "-")+".txt")
		if *update {
			os.MkdirAll(filepath.Dir(golden), 0o755)
			os.WriteFile(golden, out.Bytes(), 0o644)
			continue
		}
		want, err := os.ReadFile(golden)
		if err != nil || string(want) != out.String() {
			t.Errorf("bpfnet %s --help differs from %s (go test -update after a deliberate change):\n%s", strings.Join(path, " "), golden, out.String())
		}
	}
	dir := t.TempDir()
	r := newRoot(io.Discard, io.Discard)
	r.SetArgs([]string{"gen-man", dir})
	if err := r.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, path := range cmds {
		page := filepath.Join(dir, strings.Join(append([]string{"bpfnet"}, path...), "-")+".1")
		if b, err := os.ReadFile(page); err != nil || !bytes.Contains(b, []byte(".SH NAME")) {
			t.Errorf("man page %s: %v", page, err)
		}
	}
}
