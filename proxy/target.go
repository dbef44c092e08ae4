package proxy

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/osandbox/osandbox/policies"
)

// target is where a client wants to go, in the form the policy decides on.
type target struct {
	Host string // canonical: lower-case name or IP in canonical form
	Port int
}

func (t target) String() string { return net.JoinHostPort(t.Host, strconv.Itoa(t.Port)) }

// parseAuthority parses "host[:port]" (brackets for IPv6), taking
// defaultPort when there is none. Every IP literal form becomes the address
// it denotes.
func parseAuthority(authority string, defaultPort int) (target, error) {
	host, port := authority, defaultPort
	if h, p, err := net.SplitHostPort(authority); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return target{}, fmt.Errorf("bad port in %q", authority)
		}
		host, port = h, n
	} else if strings.HasPrefix(authority, "[") && strings.HasSuffix(authority, "]") {
		host = authority[1 : len(authority)-1]
	}
	if port == 0 {
		return target{}, fmt.Errorf("no port in %q", authority)
	}
	canon, ok := policies.CanonicalHost(host)
	if !ok {
		return target{}, fmt.Errorf("bad host in %q", authority)
	}
	return target{Host: canon, Port: port}, nil
}

// urlTarget is the target of an absolute-URI request.
func urlTarget(u *url.URL) (target, error) {
	def := 80
	switch strings.ToLower(u.Scheme) {
	case "http", "ws":
	case "https", "wss":
		def = 443
	default:
		return target{}, fmt.Errorf("unsupported scheme %q", u.Scheme)
	}
	return parseAuthority(u.Host, def)
}

// hostHeaderFor is the Host header an upstream gets for t: the port is left
// out when it is the scheme's default.
func hostHeaderFor(t target, defaultPort int) string {
	h := t.Host
	if strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	if t.Port == defaultPort {
		return h
	}
	return h + ":" + strconv.Itoa(t.Port)
}
