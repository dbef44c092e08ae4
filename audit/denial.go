package audit

import (
	"net"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// DenialPrefix starts every denial line.
const DenialPrefix = "osandbox: denied "

// DenialLine returns the one-line stderr notice for e (DESIGN 1.1), without a
// newline, and whether e is a denial at all: a connect, request, upgrade or
// dns event whose Decision is deny. The forms are
//
//	osandbox: denied CONNECT evil.example:443 (no_matching_rule)
//	osandbox: denied GET http://evil.example/x (no_matching_rule)
//	osandbox: denied GET http://chat.example/ws upgrade=websocket (upgrade_not_allowed)
//	osandbox: denied DNS evil.example A (no_matching_rule)
//
// A request's URL omits the port when it is the scheme's default; its scheme
// is https for proto https (or a tunnelled request to port 443), else http.
// The path has its query string removed. Every value comes from the
// sandboxed program, so bytes that could drive a terminal (control
// characters, spaces, invalid UTF-8) are written as %XX.
func (e Event) DenialLine() (string, bool) {
	if e.Decision != DecisionDeny {
		return "", false
	}
	var b strings.Builder
	b.Grow(64)
	b.WriteString(DenialPrefix)
	switch e.Event {
	case EventConnect:
		b.WriteString("CONNECT ")
		hostport := e.Dst
		if e.Host != "" || hostport == "" {
			hostport = net.JoinHostPort(e.Host, strconv.Itoa(e.Port))
		}
		writeSafe(&b, hostport)
	case EventRequest, EventUpgrade:
		if e.Method != "" {
			writeSafe(&b, e.Method)
			b.WriteByte(' ')
		}
		writeURL(&b, e)
		if e.Event == EventUpgrade && e.Upgrade != "" {
			b.WriteString(" upgrade=")
			writeSafe(&b, e.Upgrade)
		}
	case EventDNS:
		b.WriteString("DNS ")
		writeSafe(&b, e.Name)
		if e.QType != "" {
			b.WriteByte(' ')
			writeSafe(&b, e.QType)
		}
	default:
		return "", false
	}
	if e.Reason != "" {
		b.WriteString(" (")
		writeSafe(&b, e.Reason)
		b.WriteByte(')')
	}
	return b.String(), true
}

// writeURL writes scheme://host[:port]/path for a request event.
func writeURL(b *strings.Builder, e Event) {
	scheme, defPort := "http", 80
	if e.Proto == ProtoHTTPS || (e.Proto != ProtoHTTP && e.Port == 443) {
		scheme, defPort = "https", 443
	}
	b.WriteString(scheme)
	b.WriteString("://")
	host := e.Host
	if strings.IndexByte(host, ':') >= 0 && host[0] != '[' { // an IPv6 literal
		host = "[" + host + "]"
	}
	writeSafe(b, host)
	if e.Port != 0 && e.Port != defPort {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Port))
	}
	path := StripQuery(e.Path)
	if path != "" && path[0] != '/' {
		b.WriteByte('/')
	}
	writeSafe(b, path)
}

// writeSafe writes s with every byte of a space, a non-printable rune or
// invalid UTF-8 percent-encoded, so that a hostile name cannot move the
// cursor, clear the screen or forge a second line.
func writeSafe(b *strings.Builder, s string) {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c > ' ' && c != 0x7f {
				b.WriteByte(c)
			} else {
				writePct(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || !unicode.IsPrint(r) {
			for j := i; j < i+size; j++ {
				writePct(b, s[j])
			}
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
}

func writePct(b *strings.Builder, c byte) {
	const upperHex = "0123456789ABCDEF"
	b.WriteByte('%')
	b.WriteByte(upperHex[c>>4])
	b.WriteByte(upperHex[c&0xf])
}
