package audit

import (
	"cmp"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Target is what a summary reports for one host:port.
type Target struct {
	Host string `json:"host"`
	Port int    `json:"port"`
	// Allowed and Denied count connect and request decisions; an upgrade
	// that was let through counts in Upgrades instead.
	Allowed  int `json:"allowed"`
	Denied   int `json:"denied"`
	Upgrades int `json:"upgrades"`
	// BytesUp (client to upstream) and BytesDown add up the close events of
	// the target's connections.
	BytesUp   int64     `json:"bytes_up"`
	BytesDown int64     `json:"bytes_down"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

// Summary adds up an audit log per host:port. The zero value is ready to
// use; Add the events, then read Targets. DNS queries, start and exit
// events are counted in their own fields, not per target.
type Summary struct {
	Events     int // events added
	DNSAllowed int
	DNSDenied  int

	targets map[targetKey]*Target
	conns   map[connKey]targetKey // which target a connection id belongs to
}

type targetKey struct {
	host string
	port int
}

// connKey names a connection: ids are unique only within one run.
type connKey struct {
	sandbox string
	conn    uint64
}

// Add counts one event.
func (s *Summary) Add(e Event) {
	s.Events++
	switch e.Event {
	case EventDNS:
		if e.Decision == DecisionAllow {
			s.DNSAllowed++
		} else {
			s.DNSDenied++
		}
		return
	case EventConnect, EventRequest, EventUpgrade, EventClose:
	default:
		return
	}
	if s.targets == nil {
		s.targets = map[targetKey]*Target{}
		s.conns = map[connKey]targetKey{}
	}
	k := targetKey{e.Host, e.Port}
	ck := connKey{e.Sandbox, e.Conn}
	if e.Event == EventClose && k.host == "" && e.Conn != 0 {
		// A close without a host belongs where its connection went.
		k = s.conns[ck]
	}
	if k.host == "" {
		return
	}
	if e.Conn != 0 {
		s.conns[ck] = k
	}
	t := s.targets[k]
	if t == nil {
		t = &Target{Host: k.host, Port: k.port, FirstSeen: e.Time, LastSeen: e.Time}
		s.targets[k] = t
	}
	if e.Time.Before(t.FirstSeen) {
		t.FirstSeen = e.Time
	}
	if e.Time.After(t.LastSeen) {
		t.LastSeen = e.Time
	}
	switch e.Decision {
	case DecisionAllow:
		t.Allowed++
	case DecisionDeny:
		t.Denied++
	case DecisionAllowUpgrade:
		t.Upgrades++
	}
	if e.Event == EventClose {
		t.BytesUp += e.BytesUp
		t.BytesDown += e.BytesDown
	}
}

// Targets returns one Target per host:port, sorted by host, then port.
func (s *Summary) Targets() []Target {
	out := make([]Target, 0, len(s.targets))
	for _, t := range s.targets {
		out = append(out, *t)
	}
	slices.SortFunc(out, func(a, b Target) int {
		return cmp.Or(strings.Compare(a.Host, b.Host), cmp.Compare(a.Port, b.Port))
	})
	return out
}

// WriteTable writes the summary as an aligned text table, sizes in IEC
// units and times in UTC, followed by a line of totals. Hosts come from the
// sandboxed program, so control characters in them are escaped.
func (s *Summary) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST:PORT\tALLOWED\tDENIED\tUPGRADES\tUP\tDOWN\tFIRST SEEN\tLAST SEEN")
	var allowed, denied, upgrades int
	var up, down int64
	for _, t := range s.Targets() {
		var host strings.Builder
		writeSafe(&host, net.JoinHostPort(t.Host, strconv.Itoa(t.Port)))
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n", host.String(), t.Allowed, t.Denied, t.Upgrades,
			HumanBytes(t.BytesUp), HumanBytes(t.BytesDown), seen(t.FirstSeen), seen(t.LastSeen))
		allowed += t.Allowed
		denied += t.Denied
		upgrades += t.Upgrades
		up += t.BytesUp
		down += t.BytesDown
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d targets: %d allowed, %d denied, %d upgrades, %s up, %s down; dns: %d allowed, %d denied\n",
		len(s.targets), allowed, denied, upgrades, HumanBytes(up), HumanBytes(down), s.DNSAllowed, s.DNSDenied)
	return err
}

func seen(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// HumanBytes formats n in IEC units: "0 B", "512 B", "1.5 KiB", "12 MiB".
// One decimal below 10 units, none above.
func HumanBytes(n int64) string {
	const units = "KMGTPE"
	if n < 1024 && n > -1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	v := float64(n)
	i := -1
	for (v >= 1024 || v <= -1024) && i < len(units)-1 {
		v /= 1024
		i++
	}
	if v < 10 && v > -10 {
		return strconv.FormatFloat(v, 'f', 1, 64) + " " + units[i:i+1] + "iB"
	}
	return strconv.FormatFloat(v, 'f', 0, 64) + " " + units[i:i+1] + "iB"
}
