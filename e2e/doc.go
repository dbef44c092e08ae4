// Package e2e tests the osandbox binary the way a user runs it: TestMain
// builds it once, and each test runs real clients (curl, sh) inside
// `osandbox run` against local test servers, then decodes the audit log and
// asserts on its fields.
//
// As root, every scenario runs twice: as root (a network namespace alone)
// and as the user nobody (user + network namespaces, the rootless path).
// All test traffic goes to servers on 127.0.0.1 or to names that the proxy
// refuses before any lookup; nothing leaves the machine.
//
// OSANDBOX_E2E_BIN=/path/to/osandbox tests that binary instead of building
// one. The package holds tests only; it is not a library for driving osandbox.
package e2e
