package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"

	"github.com/osandbox/osandbox/audit"
)

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the module version and VCS revision",
		Description: "Examples:\n" +
			"   osandbox version\n\n" +
			"It prints the module version (v1.2.3 for a released build, (devel) for one built\n" +
			"from a checkout), the VCS revision and its time, \"modified\" when the tree had\n" +
			"uncommitted changes, and the Go version and platform.",
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageError(c, "takes no arguments")
			}
			fmt.Fprintln(c.App.Writer, versionString())
			return nil
		},
	}
}

// buildVersion is what debug.ReadBuildInfo says about this binary.
type buildVersion struct {
	Module   string // "v1.2.3", or "(devel)"
	Revision string // VCS revision; "" when built without VCS information
	Time     string
	Modified bool
	Go       string
}

func readBuildVersion() buildVersion {
	v := buildVersion{Module: "(unknown)", Go: runtime.Version()}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	v.Module, v.Go = info.Main.Version, info.GoVersion
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// versionString is one line, e.g.
// "osandbox (devel) revision 0123abcd... 2026-01-02T03:04:05Z modified go1.26.8 linux/amd64".
func versionString() string {
	v := readBuildVersion()
	s := "osandbox " + v.Module
	if v.Revision != "" {
		s += " revision " + v.Revision
		if v.Time != "" {
			s += " " + v.Time
		}
		if v.Modified {
			s += " modified"
		}
	} else {
		s += " revision unknown (built without VCS information)"
	}
	return s + " " + v.Go + " " + runtime.GOOS + "/" + runtime.GOARCH
}

// product names this build in exports (OCSF metadata.product.version): the
// module version, or for a development build "devel" and the short revision.
func product() audit.Product {
	v := readBuildVersion()
	version := v.Module
	if version == "(devel)" || version == "" {
		version = "devel"
		if len(v.Revision) >= 12 {
			version += "+" + v.Revision[:12]
		}
	}
	return audit.Product{Name: "osandbox", Vendor: "osandbox", Version: version}
}
