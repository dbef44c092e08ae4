package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/osandbox/osandbox/audit"
)

// wsReadLimit is above the largest message the tests send.
const wsReadLimit = 4 << 20

// startWSEcho serves a coder/websocket echo on 127.0.0.1 and returns its
// ws:// URL and port.
func startWSEcho(t *testing.T) (string, int) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(wsReadLimit)
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, b); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	port, _ := strconv.Atoi(u.Port())
	return "ws://" + u.Host + "/echo", port
}

// wsClient is an HTTP client that reaches the WebSocket server the way path
// says: through the proxy variables, or through a CONNECT.
func wsClient(tp *testProxy, path relayPath) *http.Client {
	if path.connect {
		return &http.Client{Transport: tunnelTransport(tp)}
	}
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(tp.URL)}}
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// wsEcho sends each message and requires it back unchanged.
func wsEcho(ctx context.Context, c *websocket.Conn, msgs []wsMessage) error {
	for _, m := range msgs {
		if err := c.Write(ctx, m.typ, m.data); err != nil {
			return fmt.Errorf("write %s: %w", m.name, err)
		}
		typ, b, err := c.Read(ctx)
		if err != nil {
			return fmt.Errorf("read %s: %w", m.name, err)
		}
		if typ != m.typ || !bytes.Equal(b, m.data) {
			return fmt.Errorf("%s: echo is %v of %d bytes, sent %v of %d", m.name, typ, len(b), m.typ, len(m.data))
		}
	}
	return nil
}

type wsMessage struct {
	name string
	typ  websocket.MessageType
	data []byte
}

// TestRelayWebSocketEcho: a real WebSocket client echoes text, binary and
// 1 MiB messages with a real WebSocket server on every path, and the audit
// log tells the story of the upgrade.
func TestRelayWebSocketEcho(t *testing.T) {
	wsURL, port := startWSEcho(t)
	msgs := []wsMessage{
		{"text", websocket.MessageText, []byte("hello, relay")},
		{"binary", websocket.MessageBinary, randomBytes(t, 4<<10)},
		{"text_1MiB", websocket.MessageText, bytes.Repeat([]byte("0123456789abcdef"), 1<<16)},
		{"binary_1MiB", websocket.MessageBinary, randomBytes(t, 1<<20)},
	}
	const atLeast = 2 << 20 // both 1 MiB messages, each way
	for _, path := range []relayPath{forwardPath, forwardAnyPath, inspectedPath, blindPath} {
		t.Run(path.name, func(t *testing.T) {
			tp := startProxy(t, relayPolicy(port, path.inspect, "websocket"), nil)
			ctx, cancel := context.WithTimeout(context.Background(), relayTimeout)
			defer cancel()
			hc := wsClient(tp, path)
			defer hc.CloseIdleConnections()
			c, resp, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPClient: hc})
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.CloseNow()
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("handshake status %d", resp.StatusCode)
			}
			c.SetReadLimit(wsReadLimit)
			if err := wsEcho(ctx, c, msgs); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
				t.Fatalf("close: %v", err)
			}

			var conn uint64
			if path.connect && !path.inspect {
				ev := tp.waitAudit(t, "connect", func(e audit.Event) bool { return e.Event == audit.EventConnect })
				if ev.Decision != audit.DecisionAllow || ev.Rule != relayRule || ev.Status != http.StatusOK {
					t.Errorf("connect event: %+v", ev)
				}
				conn = ev.Conn
				if n := len(eventsOf(tp.events(t), audit.EventRequest)); n != 0 {
					t.Errorf("a blind tunnel audited %d requests", n)
				}
			} else {
				req, upg, _ := tp.upgradeEvents(t)
				if req.Status != http.StatusSwitchingProtocols || req.Upgrade != "websocket" ||
					req.Rule != relayRule || req.Method != http.MethodGet || req.Path != "/echo" {
					t.Errorf("request event: %+v", req)
				}
				if upg.Upgrade != "websocket" || upg.Status != http.StatusSwitchingProtocols {
					t.Errorf("upgrade event: %+v", upg)
				}
				tp.requireFields(t, audit.EventUpgrade, req.Conn, audit.FieldOverflowBytes)
				conn = req.Conn
			}
			cls := tp.waitAudit(t, "close", func(e audit.Event) bool { return e.Event == audit.EventClose && e.Conn == conn })
			if cls.BytesUp < atLeast || cls.BytesDown < atLeast {
				t.Errorf("close event: bytes_up %d, bytes_down %d; want both >= %d", cls.BytesUp, cls.BytesDown, atLeast)
			}
			tp.requireFields(t, audit.EventClose, conn, audit.FieldBytesUp, audit.FieldBytesDown, audit.FieldDurationMS)
		})
	}
}

// TestRelayManyUpgradesAtOnce: 200 WebSocket connections on the forward
// path, all open at the same time, all echo.
func TestRelayManyUpgradesAtOnce(t *testing.T) {
	const n = 200
	wsURL, port := startWSEcho(t)
	tp := startProxy(t, relayPolicy(port, true, "websocket"), nil)
	hc := wsClient(tp, forwardPath)
	defer hc.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var opened sync.WaitGroup
	opened.Add(n)
	start := make(chan struct{})
	errs := make(chan error, n)
	for i := range n {
		go func() {
			c, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPClient: hc})
			opened.Done()
			if err != nil {
				errs <- fmt.Errorf("conn %d: dial: %w", i, err)
				return
			}
			defer c.CloseNow()
			<-start // every connection is upgraded before any echoes
			var msgs []wsMessage
			for j := range 5 {
				msgs = append(msgs, wsMessage{fmt.Sprintf("msg %d", j), websocket.MessageText,
					fmt.Appendf(nil, "conn %d message %d", i, j)})
			}
			if err := wsEcho(ctx, c, msgs); err != nil {
				errs <- fmt.Errorf("conn %d: %w", i, err)
				return
			}
			errs <- c.Close(websocket.StatusNormalClosure, "")
		}()
	}
	opened.Wait()
	close(start)
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		evs := tp.events(t)
		ups, closes := 0, len(eventsOf(evs, audit.EventClose))
		for _, e := range eventsOf(evs, audit.EventRequest) {
			if e.Decision == audit.DecisionAllowUpgrade {
				ups++
			}
		}
		if ups == n && closes == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit: %d allow_upgrade requests and %d closes, want %d of each", ups, closes, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
