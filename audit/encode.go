package audit

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// field is a bit naming one JSON field that may be omitted.
// time, sandbox and event are written on every event and have no bit.
type field uint32

const (
	fConn field = 1 << iota
	fDecision
	fReason
	fRule
	fProto
	fMethod
	fHost
	fPort
	fPath
	fUpgrade
	fStatus
	fDst
	fOverflowBytes
	fBytesUp
	fBytesDown
	fDurationMS
	fPID
	fExe
	fCommand
	fPolicySHA256
	fExitCode
	fName
	fQType
)

// always returns the fields an event of this kind carries even when they are
// zero: the ones that apply to every event of that kind (DESIGN 1.3).
// Everything else is written only when non-zero. conn, rule, status, dst, pid
// and exe are never here: their zero value means "none" or "unknown".
// An unknown kind gets no such fields.
func always(kind string) field {
	const decided = fDecision | fReason | fProto
	const request = decided | fMethod | fHost | fPort | fPath
	switch kind {
	case EventStart:
		return fCommand | fPolicySHA256
	case EventConnect:
		return decided | fHost | fPort
	case EventRequest:
		return request
	case EventUpgrade:
		return request | fUpgrade | fOverflowBytes
	case EventDNS:
		return decided | fName | fQType
	case EventClose:
		return fBytesUp | fBytesDown | fDurationMS
	case EventExit:
		return fExitCode
	}
	return 0
}

// StripQuery returns path without its query string and fragment.
// The audit log must not carry them: they often hold tokens.
func StripQuery(path string) string {
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		return path[:i]
	}
	return path
}

// MarshalJSON encodes e as one JSON object, the form of one audit log line
// without its newline.
func (e Event) MarshalJSON() ([]byte, error) {
	return e.AppendJSON(make([]byte, 0, 256)), nil
}

// AppendJSON appends e, encoded as one JSON object without a newline, to b.
// Unlike Log.Emit it fills in nothing: a zero Time is written as year 1.
func (e Event) AppendJSON(b []byte) []byte {
	must := always(e.Event)
	b = append(b, `{"`+FieldTime+`":"`...)
	b = e.Time.UTC().AppendFormat(b, TimeFormat)
	b = append(b, `","`+FieldSandbox+`":`...)
	b = appendString(b, e.Sandbox)
	b = append(b, `,"`+FieldEvent+`":`...)
	b = appendString(b, e.Event)

	b = appendUint(b, must&fConn != 0, FieldConn, e.Conn)
	b = appendStr(b, must&fDecision != 0, FieldDecision, e.Decision)
	b = appendStr(b, must&fReason != 0, FieldReason, e.Reason)
	b = appendStr(b, must&fRule != 0, FieldRule, e.Rule)
	b = appendStr(b, must&fProto != 0, FieldProto, e.Proto)
	b = appendStr(b, must&fMethod != 0, FieldMethod, e.Method)
	b = appendStr(b, must&fHost != 0, FieldHost, e.Host)
	b = appendInt(b, must&fPort != 0, FieldPort, int64(e.Port))
	b = appendStr(b, must&fPath != 0, FieldPath, StripQuery(e.Path))
	b = appendStr(b, must&fUpgrade != 0, FieldUpgrade, e.Upgrade)
	b = appendInt(b, must&fStatus != 0, FieldStatus, int64(e.Status))
	b = appendStr(b, must&fDst != 0, FieldDst, e.Dst)
	b = appendInt(b, must&fOverflowBytes != 0, FieldOverflowBytes, e.OverflowBytes)
	b = appendInt(b, must&fBytesUp != 0, FieldBytesUp, e.BytesUp)
	b = appendInt(b, must&fBytesDown != 0, FieldBytesDown, e.BytesDown)
	b = appendInt(b, must&fDurationMS != 0, FieldDurationMS, e.Duration.Milliseconds())
	b = appendInt(b, must&fPID != 0, FieldPID, int64(e.PID))
	b = appendStr(b, must&fExe != 0, FieldExe, e.Exe)
	if must&fCommand != 0 || len(e.Command) > 0 {
		b = append(b, `,"`+FieldCommand+`":[`...)
		for i, arg := range e.Command {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, arg)
		}
		b = append(b, ']')
	}
	b = appendStr(b, must&fPolicySHA256 != 0, FieldPolicySHA256, e.PolicySHA256)
	b = appendInt(b, must&fExitCode != 0, FieldExitCode, int64(e.ExitCode))
	b = appendStr(b, must&fName != 0, FieldName, e.Name)
	b = appendStr(b, must&fQType != 0, FieldQType, e.QType)
	return append(b, '}')
}

// appendKey appends `,"key":`. Keys are package constants and need no escaping.
func appendKey(b []byte, key string) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	return append(b, '"', ':')
}

func appendStr(b []byte, must bool, key, v string) []byte {
	if !must && v == "" {
		return b
	}
	return appendString(appendKey(b, key), v)
}

func appendInt(b []byte, must bool, key string, v int64) []byte {
	if !must && v == 0 {
		return b
	}
	return strconv.AppendInt(appendKey(b, key), v, 10)
}

func appendUint(b []byte, must bool, key string, v uint64) []byte {
	if !must && v == 0 {
		return b
	}
	return strconv.AppendUint(appendKey(b, key), v, 10)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Like encoding/json it replaces
// invalid UTF-8 with U+FFFD and escapes U+2028 and U+2029; unlike it, it does
// not escape <, > and &, which are harmless in a log file.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0 // s[start:i] is pending, needs no escaping
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
