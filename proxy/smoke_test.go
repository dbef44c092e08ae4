package proxy

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestSmokeWebSocket(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(2 << 20)
		for {
			typ, b, err := c.Read(context.Background())
			if err != nil {
				return
			}
			c.Write(context.Background(), typ, b)
		}
	}))
	defer srv.Close()
	port := strings.TrimPrefix(srv.URL, "http://127.0.0.1:")
	for _, pol := range []string{
		fmt.Sprintf("version: 1\nallow:\n  - name: ws\n    hosts: [127.0.0.1]\n    ports: [%s]\n", port),
		fmt.Sprintf("version: 1\nallow:\n  - name: ws\n    hosts: [127.0.0.1]\n    ports: [%s]\n    http:\n      - methods: [GET]\n        paths: [\"/**\"]\n        upgrade: [websocket]\n", port),
	} {
		tp := startProxy(t, pol, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(tp.URL)}}
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/echo", &websocket.DialOptions{HTTPClient: hc})
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadLimit(2 << 20)
		msg := strings.Repeat("x", 1<<20)
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, b, err := c.Read(ctx)
		if err != nil || string(b) != msg {
			t.Fatalf("echo: %v len %d", err, len(b))
		}
		c.Close(websocket.StatusNormalClosure, "")
		cancel()
		time.Sleep(100 * time.Millisecond)
		for _, e := range tp.events(t) {
			t.Logf("%+v", e)
		}
	}
}
