package main

import (
	"bytes"
	"strings"
	"testing"
)

// Unknown commands and arguments are usage errors (exit 1 in main), never
// help with exit 0; a group alone prints its help, as the docker CLI does.
// None of these reach the daemon.
func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string // "" means success
	}{
		{[]string{"network", "frob"}, `unknown command "frob" for "bpfnet network"`},
		{[]string{"network", "connect", "web"}, "accepts 2 arg(s), received 1"},
		{[]string{"network", "ls", "--filter", "colour=red"}, "invalid filter 'colour=red'"},
		{[]string{"network", "ls", "--format", "{{.Nope"}, "invalid --format template"},
		{[]string{"network", "create", "--label", "=x", "web"}, `invalid --label "=x"`},
		{[]string{"network", "create", "--driver", "overlay", "web"}, `driver "overlay" is not supported`},
		{[]string{"network", "connect", "--alias", "db", "web", "c1"}, "no DNS"},
		{[]string{"endpoint", "frob"}, `unknown command "frob" for "bpfnet endpoint"`},
		{[]string{"nat", "flush"}, `unknown command "flush" for "bpfnet nat"`},
		{[]string{"compat", "apply"}, `unknown command "apply" for "bpfnet compat"`},
		{[]string{"frob"}, `unknown command "frob" for "bpfnet"`},
		{[]string{"network", "ls", "extra"}, `unknown command "extra" for "bpfnet network ls"`},
		{[]string{"network", "create"}, "accepts 1 arg(s), received 0"},
		{[]string{"network", "--no-such-flag"}, "unknown flag: --no-such-flag"},
		{[]string{"network"}, ""},
	} {
		var out, errOut bytes.Buffer
		root := newRoot(&out, &errOut)
		root.SetArgs(tc.args)
		err := root.Execute()
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("bpfnet %s: %v", strings.Join(tc.args, " "), err)
		case tc.err == "" && !strings.Contains(out.String(), "Available Commands"):
			t.Errorf("bpfnet %s printed no help:\n%s", strings.Join(tc.args, " "), out.String())
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("bpfnet %s: error %v, want one containing %q", strings.Join(tc.args, " "), err, tc.err)
		}
	}
}
