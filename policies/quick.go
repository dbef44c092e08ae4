package policies

import (
	"fmt"
	"strconv"
	"strings"
)

// QuickRule parses the value of an --allow HOST[:PORT] flag into a
// connection-level allow rule named after the flag text ("--allow " + spec).
// HOST is anything a policy's hosts may hold: an exact name, "*.x", "**.x",
// an IPv4 address, an IPv6 address in brackets ("[::1]:8080"; without a port
// the brackets are optional), or a CIDR ("10.0.0.0/8:5432",
// "[fd00::/8]:443"). PORT defaults to 80 and 443.
func QuickRule(spec string) (Rule, error) {
	host, port, err := splitQuick(spec)
	if err != nil {
		return Rule{}, fmt.Errorf("--allow %q: %w", spec, err)
	}
	h, err := ParseHostPattern(host)
	if err != nil {
		return Rule{}, fmt.Errorf("--allow %q: %w", spec, err)
	}
	r := Rule{Name: "--allow " + spec, Hosts: []HostPattern{h}, Ports: DefaultPorts()}
	if port != "" {
		if strings.Trim(port, "0123456789") != "" {
			return Rule{}, fmt.Errorf("--allow %q: port %q is not a number", spec, port)
		}
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return Rule{}, fmt.Errorf("--allow %q: port %s out of range (1-65535)", spec, port)
		}
		r.Ports = []int{n}
	}
	return r, nil
}

// splitQuick splits HOST[:PORT]; port is "" when absent.
func splitQuick(spec string) (host, port string, err error) {
	switch {
	case spec == "":
		return "", "", fmt.Errorf("empty value; want HOST[:PORT]")
	case strings.Contains(spec, "://"):
		return "", "", fmt.Errorf("want HOST[:PORT], not a URL")
	case strings.HasPrefix(spec, "["):
		end := strings.IndexByte(spec, ']')
		if end < 0 {
			return "", "", fmt.Errorf(`missing "]" after IPv6 address`)
		}
		host, rest := spec[1:end], spec[end+1:]
		if !strings.Contains(host, ":") {
			return "", "", fmt.Errorf("brackets are only for IPv6 addresses")
		}
		if rest == "" {
			return host, "", nil
		}
		port, ok := strings.CutPrefix(rest, ":")
		if !ok || port == "" {
			return "", "", fmt.Errorf("want [IPV6]:PORT after the brackets, got %q", rest)
		}
		return host, port, nil
	case strings.Count(spec, ":") > 1:
		return spec, "", nil // bare IPv6 address or CIDR, no port
	}
	host, port, found := strings.Cut(spec, ":")
	if found && port == "" {
		return "", "", fmt.Errorf("empty port after \":\"")
	}
	if host == "" {
		return "", "", fmt.Errorf("empty host")
	}
	return host, port, nil
}
