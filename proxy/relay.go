package proxy

import "net/http"

func (p *Proxy) serveForwardUpgrade(w http.ResponseWriter, r *http.Request) {
	http.Error(w, "not yet", http.StatusNotImplemented)
}
