// Package version is the build's identity, which both binaries print with
// --version and the daemon reports in its status and metrics. The Makefile
// and the Dockerfile set Version, Commit and Date with -ldflags -X; a plain
// `go build` falls back to what the Go toolchain recorded (the VCS
// revision and time).
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/bpfnet/bpfnet/api"
)

// Set at build time: -X github.com/bpfnet/bpfnet/internal/version.Version=...
var (
	Version = "dev"
	Commit  = ""
	Date    = ""
)

func init() {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	for _, s := range info.Settings {
		switch {
		case s.Key == "vcs.revision" && Commit == "":
			Commit = s.Value
		case s.Key == "vcs.time" && Date == "":
			Date = s.Value
		}
	}
}

// String is the line --version prints for the named binary.
func String(binary string) string {
	or := func(s string) string {
		if s == "" {
			return "unknown"
		}
		return s
	}
	return fmt.Sprintf("%s %s (commit %s, built %s, %s %s/%s)", binary, Version, or(Commit), or(Date), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// API is this build as the API and `bpfnet version` report it.
func API() api.Version {
	return api.Version{Version: Version, Commit: Commit, Built: Date, GoVersion: runtime.Version(), Os: runtime.GOOS, Arch: runtime.GOARCH}
}
