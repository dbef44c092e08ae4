// Package policies parses osandbox policy files (version 1) and decides,
// purely, whether a connection or an HTTP request may leave the sandbox.
//
// It gives the proxy three things: a [Policy] built once from YAML
// ([Load], [Parse], [Default], [QuickRule]); [Policy.Decide], which maps a
// [Request] to a [Decision] with a [Reason] and the name of the rule that made
// it; and the SSRF guard ([Policy.AddrAllowed], [Special]) applied to every
// address the proxy is about to dial. [CanonicalHost] turns whatever host the
// client asked for into the one form Decide matches on, so that an IP literal
// in any spelling is decided as the address it denotes. [Policy.NameAllowed]
// tells the DNS stub which names it may answer.
//
// For the CLI it also explains a decision (explain.go), suggests the
// smallest policy that allows what an audit log shows (suggest.go), and
// carries the policy file's JSON Schema (jsonschema.go).
//
// It does not resolve names, dial, log, read anything but the policy file in
// [Load], or normalise URL paths: the proxy hands Decide a path it has already
// cleaned and stripped of its query. Nothing here keeps state between calls; a
// Policy is safe for concurrent use as long as nobody mutates it.
package policies
