package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// wireEvent is the decoding form of an Event. Its tags must equal the Field*
// constants; TestWireTagsMatchFieldConstants keeps them in step.
type wireEvent struct {
	Time          string      `json:"time"`
	Sandbox       string      `json:"sandbox"`
	Event         string      `json:"event"`
	Conn          uint64      `json:"conn"`
	Decision      string      `json:"decision"`
	Reason        string      `json:"reason"`
	Rule          string      `json:"rule"`
	Proto         string      `json:"proto"`
	Method        string      `json:"method"`
	Host          string      `json:"host"`
	Port          int         `json:"port"`
	Path          string      `json:"path"`
	Upgrade       string      `json:"upgrade"`
	Status        int         `json:"status"`
	Dst           string      `json:"dst"`
	OverflowBytes int64       `json:"overflow_bytes"`
	BytesUp       int64       `json:"bytes_up"`
	BytesDown     int64       `json:"bytes_down"`
	DurationMS    json.Number `json:"duration_ms"` // integer, or a float from other writers
	PID           int         `json:"pid"`
	Exe           string      `json:"exe"`
	Command       []string    `json:"command"`
	PolicySHA256  string      `json:"policy_sha256"`
	ExitCode      int         `json:"exit_code"`
	Name          string      `json:"name"`
	QType         string      `json:"qtype"`
}

// ParseLine decodes one audit log line (with or without its newline).
// Unknown fields are ignored; absent fields are left zero. Time is returned
// in UTC. The line must be one JSON object.
func ParseLine(line []byte) (Event, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return Event{}, errors.New("audit: line is not a JSON object")
	}
	var w wireEvent
	if err := json.Unmarshal(line, &w); err != nil {
		return Event{}, fmt.Errorf("audit: %w", err)
	}
	e := Event{
		Sandbox:       w.Sandbox,
		Event:         w.Event,
		Conn:          w.Conn,
		Decision:      w.Decision,
		Reason:        w.Reason,
		Rule:          w.Rule,
		Proto:         w.Proto,
		Method:        w.Method,
		Host:          w.Host,
		Port:          w.Port,
		Path:          w.Path,
		Upgrade:       w.Upgrade,
		Status:        w.Status,
		Dst:           w.Dst,
		OverflowBytes: w.OverflowBytes,
		BytesUp:       w.BytesUp,
		BytesDown:     w.BytesDown,
		PID:           w.PID,
		Exe:           w.Exe,
		Command:       w.Command,
		PolicySHA256:  w.PolicySHA256,
		ExitCode:      w.ExitCode,
		Name:          w.Name,
		QType:         w.QType,
	}
	if w.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, w.Time)
		if err != nil {
			return Event{}, fmt.Errorf("audit: field %s: %w", FieldTime, err)
		}
		e.Time = t.UTC()
	}
	if w.DurationMS != "" {
		d, err := parseMillis(w.DurationMS)
		if err != nil {
			return Event{}, fmt.Errorf("audit: field %s: %w", FieldDurationMS, err)
		}
		e.Duration = d
	}
	return e, nil
}

// parseMillis reads a millisecond count: exactly when it is an integer,
// rounded to the nanosecond when it has a fraction.
func parseMillis(n json.Number) (time.Duration, error) {
	const maxMS = math.MaxInt64 / int64(time.Millisecond)
	if ms, err := n.Int64(); err == nil {
		if ms > maxMS || ms < -maxMS {
			return 0, fmt.Errorf("%d out of range", ms)
		}
		return time.Duration(ms) * time.Millisecond, nil
	}
	f, err := n.Float64()
	if err != nil {
		return 0, err
	}
	if math.IsNaN(f) || math.Abs(f) >= float64(maxMS) {
		return 0, fmt.Errorf("%s out of range", n)
	}
	return time.Duration(math.Round(f * float64(time.Millisecond))), nil
}

// ReadAll decodes every line of an audit log. Blank lines are skipped.
// On a bad line it returns the events before it and an error naming the
// line number; a log cut short by a crash ends in such a line.
func ReadAll(r io.Reader) ([]Event, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var events []Event
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			e, perr := ParseLine(line)
			if perr != nil {
				return events, fmt.Errorf("line %d: %w", n, perr)
			}
			events = append(events, e)
		}
		if err == io.EOF {
			return events, nil
		}
		if err != nil {
			return events, fmt.Errorf("audit: read line %d: %w", n, err)
		}
	}
}
