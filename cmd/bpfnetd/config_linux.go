package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// DefaultConfigFile is read when --config is not given; it may be absent.
const DefaultConfigFile = "/etc/bpfnet/bpfnetd.yaml"

// notInFile are the flags that are actions or the file itself, not
// configuration.
var notInFile = []string{"config", "check", "cleanup", "print-config", "version", "help"}

// applyConfigFile reads a YAML file whose keys are the daemon's flag names
// and sets every flag not given on the command line (flags win). Unknown
// keys are an error. A missing file is fine only when it is the default.
func applyConfigFile(fset *pflag.FlagSet, path string, explicit bool) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var doc map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	set := map[string]bool{}
	fset.Visit(func(f *pflag.Flag) { set[f.Name] = true })
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		f := fset.Lookup(k)
		if f == nil || slices.Contains(notInFile, k) {
			return fmt.Errorf("config file %s: unknown key %q (keys are the flag names: bpfnetd --help)", path, k)
		}
		if set[k] {
			continue
		}
		v, err := scalar(doc[k])
		if err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, k, err)
		}
		if err := fset.Set(k, v); err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, k, err)
		}
	}
	return nil
}

// scalar turns a YAML value into flag text; a list becomes a
// comma-separated value (--uplink).
func scalar(v any) (string, error) {
	switch v := v.(type) {
	case nil:
		return "", nil
	case string, bool, int, float64:
		return fmt.Sprint(v), nil
	case []any:
		var parts []string
		for _, x := range v {
			s, err := scalar(x)
			if err != nil {
				return "", err
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("unsupported value %v", v)
}

// settings are the flags' effective values by name (actions and the
// config file itself left out).
func settings(fset *pflag.FlagSet) map[string]string {
	out := map[string]string{}
	fset.VisitAll(func(f *pflag.Flag) {
		if !slices.Contains(notInFile, f.Name) {
			out[f.Name] = f.Value.String()
		}
	})
	return out
}

// printConfig writes the effective configuration as a config file.
func printConfig(fset *pflag.FlagSet) string {
	var b strings.Builder
	b.WriteString("# effective bpfnetd configuration (flags over " + DefaultConfigFile + " or --config)\n")
	fset.VisitAll(func(f *pflag.Flag) {
		if slices.Contains(notInFile, f.Name) {
			return
		}
		v := f.Value.String()
		if f.Value.Type() == "bool" {
			fmt.Fprintf(&b, "%s: %s\n", f.Name, v)
			return
		}
		out, _ := yaml.Marshal(v)
		fmt.Fprintf(&b, "%s: %s", f.Name, out)
	})
	return b.String()
}
