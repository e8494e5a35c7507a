package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, text string) string {
	p := filepath.Join(t.TempDir(), "bpfnetd.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigFile(t *testing.T) {
	p := writeConfig(t, "# comment\ndatapath: iptables\nuplink: [eth1, eth2]\nnat-ports: 2000-3000\nforward-rule: false\nmetrics-addr: \"\"\n")
	cfg, err := parseFlags([]string{"--config", p, "--nat-ports=4000-5000"}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Datapath != "iptables" || strings.Join(cfg.Uplinks, ",") != "eth1,eth2" || cfg.ForwardRule || cfg.MetricsAddr != "" {
		t.Errorf("file values not applied: %+v", cfg)
	}
	if cfg.NATPorts != [2]uint16{4000, 5000} {
		t.Errorf("the flag must win over the file: nat ports %v", cfg.NATPorts)
	}
	cfg, err = parseFlags([]string{"--config", p, "--print-config"}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"datapath: iptables\n", "uplink: eth1,eth2\n", "nat-ports: 2000-3000\n", "forward-rule: false\n", "metrics-addr: \"\"\n", "bpffs: /sys/fs/bpf/bpfnet\n"} {
		if !strings.Contains(cfg.PrintConfig, want) {
			t.Errorf("--print-config lacks %q:\n%s", want, cfg.PrintConfig)
		}
	}
	// What --print-config prints is a config file that gives the same.
	again, err := parseFlags([]string{"--config", writeConfig(t, cfg.PrintConfig)}, &strings.Builder{})
	if err != nil {
		t.Fatalf("--print-config output does not load: %v", err)
	}
	if again.Datapath != "iptables" || again.NATPorts != [2]uint16{2000, 3000} || strings.Join(again.Uplinks, ",") != "eth1,eth2" {
		t.Errorf("round trip: %+v", again)
	}
}

func TestConfigFileErrors(t *testing.T) {
	for _, tc := range []struct {
		text, msg string
	}{
		{"datapth: ebpf\n", `unknown key "datapth"`},
		{"check: true\n", `unknown key "check"`},
		{"datapath: nft\n", "invalid --datapath"},
		{"nat-ports: 0-1\n", "invalid --nat-ports"},
		{"datapath: [unclosed\n", "config file"},
		{"forward-rule: maybe\n", "forward-rule"},
	} {
		_, err := parseFlags([]string{"--config", writeConfig(t, tc.text)}, &strings.Builder{})
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("config %q: error %v, want %q", tc.text, err, tc.msg)
		}
	}
	if _, err := parseFlags([]string{"--config", "/nonexistent/bpfnetd.yaml"}, &strings.Builder{}); err == nil {
		t.Errorf("an explicit --config that does not exist must be an error")
	}
}
