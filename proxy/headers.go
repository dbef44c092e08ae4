package proxy

import (
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// hopHeaders are removed on every hop (RFC 9110 7.6.1), as
// httputil.ReverseProxy does.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHopHeaders drops the hop-by-hop headers and every header the
// Connection header names.
func removeHopHeaders(h http.Header) {
	for _, f := range h["Connection"] {
		for _, sf := range strings.Split(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

// upgradeType is the lower-cased Upgrade protocol when the Connection
// header carries the "upgrade" token, else "".
func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return strings.ToLower(strings.TrimSpace(h.Get("Upgrade")))
}

// validUpgradeToken reports whether s is printable ASCII without spaces,
// as httputil.ReverseProxy requires before it switches.
func validUpgradeToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// requestPath is the normalised path a request is decided on: no query,
// dot segments resolved, "//" collapsed, unreserved percent-escapes
// decoded, and "%2F" kept as an escape so it never becomes a separator.
func requestPath(u *url.URL) string {
	return normalizePath(u.EscapedPath())
}

func normalizePath(raw string) string {
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		raw = raw[:i]
	}
	segs := strings.Split(raw, "/")
	out := make([]string, 0, len(segs))
	for _, s := range segs {
		s = decodeUnreserved(s)
		switch s {
		case "", ".":
			continue
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			continue
		}
		out = append(out, s)
	}
	p := "/" + strings.Join(out, "/")
	if len(out) > 0 && strings.HasSuffix(raw, "/") {
		p += "/"
	}
	return p
}

// decodeUnreserved decodes %XX escapes of unreserved characters (RFC 3986
// 2.3), upper-cases the hex of the others and escapes a stray '%', so equal
// paths compare equal and normalising twice changes nothing.
func decodeUnreserved(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			c := unhex(s[i+1])<<4 | unhex(s[i+2])
			if isUnreserved(c) {
				b.WriteByte(c)
			} else {
				b.WriteByte('%')
				b.WriteString(strings.ToUpper(s[i+1 : i+3]))
			}
			i += 2
			continue
		}
		if s[i] == '%' {
			// A stray '%' is data: escape it, so that no decoded byte can
			// form a new escape with what follows ("%%61" must not become
			// "%a" and then something else on a second pass).
			b.WriteString("%25")
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
