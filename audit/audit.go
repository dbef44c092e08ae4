// Package audit records what the osandbox proxy decided, as JSON Lines
// (DESIGN 1.3), and prints the one-line stderr notice for each denial
// (DESIGN 1.1).
//
// An Event is one record; a Log encodes events, buffers them, and appends them
// to a file or writer, flushing at least once per interval and on Close.
// ParseLine and ReadAll read a log back.
//
// This package does not decide anything: callers (the proxy, the sandbox
// runner) pass it finished decisions. It does not rotate or truncate files, it
// does not emit osandbox's own diagnostics (those go to the injected logger).
// Export (export.go, ocsf.go: JSON, CSV, OCSF) and Summary read finished
// logs for the `osandbox audit` commands.
package audit

import "time"

// Kinds of events, the value of the "event" field.
const (
	EventStart   = "start"   // the sandbox is about to run the command
	EventConnect = "connect" // a connection-level decision (CONNECT, captured TCP)
	EventRequest = "request" // an HTTP request decision and its outcome
	EventUpgrade = "upgrade" // a request that asked to switch protocols
	EventDNS     = "dns"     // a DNS query decision
	EventClose   = "close"   // a connection ended; carries byte counts and duration
	EventExit    = "exit"    // the command exited
)

// Decisions, the value of the "decision" field.
const (
	DecisionAllow        = "allow"
	DecisionDeny         = "deny"
	DecisionAllowUpgrade = "allow_upgrade"
)

// Protos, the value of the "proto" field.
const (
	ProtoHTTP    = "http"
	ProtoHTTPS   = "https"
	ProtoConnect = "connect"
	ProtoTCP     = "tcp"
	ProtoDNS     = "dns"
)

// JSON field names. They are part of the user-facing contract (DESIGN 1.3):
// add, never rename.
const (
	FieldTime          = "time"
	FieldSandbox       = "sandbox"
	FieldEvent         = "event"
	FieldConn          = "conn"
	FieldDecision      = "decision"
	FieldReason        = "reason"
	FieldRule          = "rule"
	FieldProto         = "proto"
	FieldMethod        = "method"
	FieldHost          = "host"
	FieldPort          = "port"
	FieldPath          = "path"
	FieldUpgrade       = "upgrade"
	FieldStatus        = "status"
	FieldDst           = "dst"
	FieldOverflowBytes = "overflow_bytes"
	FieldBytesUp       = "bytes_up"
	FieldBytesDown     = "bytes_down"
	FieldDurationMS    = "duration_ms"
	FieldPID           = "pid"
	FieldExe           = "exe"
	FieldCommand       = "command"
	FieldPolicySHA256  = "policy_sha256"
	FieldExitCode      = "exit_code"
	FieldName          = "name"
	FieldQType         = "qtype"
)

// TimeFormat is how the "time" field is written: RFC 3339 in UTC with a
// fixed nine-digit fraction, so that lines sort by time as plain strings.
// Any RFC 3339 time is accepted when reading.
const TimeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// Event is one audit record. Time and Sandbox are filled by the Log if zero;
// so is Proto on a dns event.
//
// Which fields are written depends on Event (the kind). time, sandbox and
// event are always written. These are written even when zero, because they
// apply to every event of the kind (DESIGN 1.3):
//
//	start    command ([] when nil), policy_sha256
//	connect  decision, reason, proto, host, port
//	request  decision, reason, proto, method, host, port, path
//	upgrade  as request, plus upgrade, overflow_bytes
//	dns      decision, reason, proto, name, qtype
//	close    bytes_up, bytes_down, duration_ms
//	exit     exit_code
//
// Every other field is written only when non-zero, on any kind: conn, rule,
// status, dst, pid and exe in particular, whose zero means "none" or
// "unknown". So a caller never loses a value it set, and a reader can rely
// on, say, exit_code on every exit event. duration_ms is whole milliseconds.
type Event struct {
	Time     time.Time
	Sandbox  string
	Event    string // one of the Event* constants
	Conn     uint64 // from Log.NextConn; 0 = not tied to a connection
	Decision string // one of the Decision* constants
	Reason   string // why, e.g. "rule_allow", "no_matching_rule"
	Rule     string // name of the deciding policy rule, if any
	Proto    string // one of the Proto* constants
	Method   string
	Host     string
	Port     int
	Path     string // the query string ("?...") and fragment are always stripped
	Upgrade  string // requested Upgrade protocol
	Status   int    // HTTP status sent to the client; 0 = none was sent
	Dst      string // IP:port actually dialed

	OverflowBytes int64 // bytes that arrived with the 101 head and were forwarded
	BytesUp       int64 // client to upstream
	BytesDown     int64 // upstream to client
	Duration      time.Duration

	PID          int    // sandboxed process that opened the connection; 0 = unknown
	Exe          string // its executable, when known
	Command      []string
	PolicySHA256 string // hex SHA-256 of the effective policy
	ExitCode     int

	Name  string // DNS query name
	QType string // DNS query type, e.g. "A", "AAAA"
}
