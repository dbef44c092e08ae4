package audit

import (
	"strings"
	"testing"
)

func TestDenialLine(t *testing.T) {
	deny := func(e Event) Event {
		e.Decision, e.Reason = DecisionDeny, "no_matching_rule"
		return e
	}
	for _, tc := range []struct {
		name string
		e    Event
		want string // "" = not a denial
	}{
		{"connect", deny(Event{Event: EventConnect, Proto: ProtoConnect, Host: "evil.example", Port: 443}),
			"osandbox: denied CONNECT evil.example:443 (no_matching_rule)"},
		{"captured tcp", deny(Event{Event: EventConnect, Proto: ProtoTCP, Host: "evil.example", Port: 22}),
			"osandbox: denied CONNECT evil.example:22 (no_matching_rule)"},
		{"connect ipv6", deny(Event{Event: EventConnect, Proto: ProtoTCP, Host: "::1", Port: 80}),
			"osandbox: denied CONNECT [::1]:80 (no_matching_rule)"},
		{"connect no name uses dst", deny(Event{Event: EventConnect, Proto: ProtoTCP, Dst: "10.0.0.1:25"}),
			"osandbox: denied CONNECT 10.0.0.1:25 (no_matching_rule)"},
		{"http request", deny(Event{Event: EventRequest, Proto: ProtoHTTP, Method: "GET",
			Host: "evil.example", Port: 80, Path: "/x"}),
			"osandbox: denied GET http://evil.example/x (no_matching_rule)"},
		{"http request odd port, query stripped", deny(Event{Event: EventRequest, Proto: ProtoHTTP,
			Method: "GET", Host: "evil.example", Port: 8080, Path: "/x?token=secret"}),
			"osandbox: denied GET http://evil.example:8080/x (no_matching_rule)"},
		{"https request", deny(Event{Event: EventRequest, Proto: ProtoHTTPS, Method: "POST",
			Host: "api.github.com", Port: 443, Path: "/gists/1"}),
			"osandbox: denied POST https://api.github.com/gists/1 (no_matching_rule)"},
		{"https request odd port", deny(Event{Event: EventRequest, Proto: ProtoHTTPS, Method: "GET",
			Host: "h", Port: 8443, Path: "/"}),
			"osandbox: denied GET https://h:8443/ (no_matching_rule)"},
		{"tunnelled request to 443", deny(Event{Event: EventRequest, Proto: ProtoConnect, Method: "GET",
			Host: "h", Port: 443, Path: "/a"}),
			"osandbox: denied GET https://h/a (no_matching_rule)"},
		{"request without method", deny(Event{Event: EventRequest, Proto: ProtoHTTP, Host: "h", Port: 80}),
			"osandbox: denied http://h (no_matching_rule)"},
		{"upgrade", Event{Event: EventUpgrade, Decision: DecisionDeny, Reason: "upgrade_not_allowed",
			Proto: ProtoHTTP, Method: "GET", Host: "chat.example", Port: 80, Path: "/ws", Upgrade: "websocket"},
			"osandbox: denied GET http://chat.example/ws upgrade=websocket (upgrade_not_allowed)"},
		{"dns", deny(Event{Event: EventDNS, Name: "evil.example", QType: "A"}),
			"osandbox: denied DNS evil.example A (no_matching_rule)"},
		{"dns without qtype", deny(Event{Event: EventDNS, Name: "evil.example"}),
			"osandbox: denied DNS evil.example (no_matching_rule)"},
		{"hostile bytes escaped", deny(Event{Event: EventRequest, Proto: ProtoHTTP, Method: "GET",
			Host: "h\x1b[2J", Port: 80, Path: "/a b\nosandbox: allowed\u009b\xff"}),
			"osandbox: denied GET http://h%1B[2J/a%20b%0Aosandbox:%20allowed%C2%9B%FF (no_matching_rule)"},
		{"unicode name kept", deny(Event{Event: EventDNS, Name: "bücher.example", QType: "AAAA"}),
			"osandbox: denied DNS bücher.example AAAA (no_matching_rule)"},
		{"allowed is not a denial", Event{Event: EventConnect, Decision: DecisionAllow, Host: "h", Port: 1}, ""},
		{"learn mode is not a denial", Event{Event: EventRequest, Decision: DecisionAllow,
			Reason: "learn_mode", Host: "h", Port: 80}, ""},
		{"close is never a denial", deny(Event{Event: EventClose}), ""},
		{"exit is never a denial", deny(Event{Event: EventExit}), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tc.e.DenialLine()
			if ok != (tc.want != "") || got != tc.want {
				t.Errorf("DenialLine() = %q, %v\nwant %q", got, ok, tc.want)
			}
			if strings.ContainsAny(got, "\n\r\x1b") {
				t.Errorf("control bytes in %q", got)
			}
		})
	}
}
