package e2e

import (
	"fmt"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/osandbox/osandbox/audit"
)

// gitHost serves the test repository; it is pinned to 127.0.0.1.
const gitHost = "git.e2e.test"

// readme is the one file committed to the test repository.
const readme = "cloned through osandbox\n"

// gitServer is git's smart HTTP protocol (git http-backend as CGI) over
// TLS on 127.0.0.1, serving one bare repository, repo.git, which also
// accepts pushes: only the proxy stands between a push and the repository.
type gitServer struct {
	port     int
	certPEM  string
	bare     string       // the bare repository
	adverts  atomic.Int64 // info/refs?service=git-receive-pack requests that reached the server
	receives atomic.Int64 // git-receive-pack POSTs (the push itself) that reached the server
}

func newGitServer(t *testing.T) *gitServer {
	t.Helper()
	gitPath, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git is not installed")
	}
	root := t.TempDir()
	g := &gitServer{bare: filepath.Join(root, "repo.git")}
	work := filepath.Join(root, "work")
	git := func(dir string, args ...string) {
		t.Helper()
		cmd := exec.Command(gitPath, args...)
		cmd.Dir = dir
		cmd.Env = []string{"HOME=" + root, "GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_NAME=e2e", "GIT_AUTHOR_EMAIL=e2e@e2e.test",
			"GIT_COMMITTER_NAME=e2e", "GIT_COMMITTER_EMAIL=e2e@e2e.test"}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	git(root, "init", "-q", "--bare", "--initial-branch=main", g.bare)
	git(g.bare, "config", "http.receivepack", "true")
	git(root, "init", "-q", "--initial-branch=main", work)
	if err := os.WriteFile(filepath.Join(work, "README"), []byte(readme), 0o644); err != nil {
		t.Fatal(err)
	}
	git(work, "add", "README")
	git(work, "commit", "-q", "-m", "first")
	git(work, "push", "-q", g.bare, "main")

	backend := &cgi.Handler{
		Path: gitPath,
		Args: []string{"http-backend"},
		Dir:  root,
		Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1", "HOME=" + root},
	}
	g.port, g.certPEM = serveTLS(t, gitHost, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/repo.git/git-receive-pack":
			g.receives.Add(1)
		case r.URL.Query().Get("service") == "git-receive-pack":
			g.adverts.Add(1)
		}
		backend.ServeHTTP(w, r)
	}))
	return g
}

// head is the commit main points to in the bare repository.
func (g *gitServer) head(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("git", "--git-dir", g.bare, "rev-parse", "main").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// TestGitCloneIntercepted: git clones over HTTPS through TLS interception
// from a smart-HTTP server, with only the fetch paths allowed. A push is
// refused by the proxy (git-receive-pack has no rule) before the server
// sees it, and audited.
func TestGitCloneIntercepted(t *testing.T) {
	forEachUser(t, func(t *testing.T, sb *sandbox) {
		g := newGitServer(t)
		policy := sb.file(t, "policy.yaml", fmt.Sprintf(`version: 1
allow:
  - name: git-fetch
    hosts: [%s]
    ports: [%d]
    http:
      - methods: [GET]
        paths: [/repo.git/info/refs]
      - methods: [POST]
        paths: [/repo.git/git-upload-pack]
allow_private: [127.0.0.1/32]
`, gitHost, g.port))
		upstreamCA := sb.file(t, "upstream.pem", g.certPEM)
		before := g.head(t)
		url := fmt.Sprintf("https://%s:%d/repo.git", gitHost, g.port)
		// GIT_SSL_CAINFO (set by osandbox) is how git trusts the run CA.
		script := fmt.Sprintf(`export GIT_TERMINAL_PROMPT=0 GIT_CONFIG_NOSYSTEM=1
git clone -q %s clone || exit 10
cd clone
echo change >>README
git -c user.name=e2e -c user.email=e2e@e2e.test commit -q -am change || exit 11
git push -q origin main 2>../push.err && exit 12
exit 0`, url)
		r := sb.run(t, []string{"--policy", policy, "--resolve", gitHost + ":127.0.0.1", "--upstream-ca", upstreamCA},
			"sh", "-c", script)
		r.wantCode(t, 0)

		if got := readFile(t, sb.path("clone/README")); got != readme+"change\n" {
			t.Errorf("README in the clone: %q", got)
		}
		if pushErr := readFile(t, sb.path("push.err")); !strings.Contains(pushErr, "403") {
			t.Errorf("push failed without a 403:\n%s", pushErr)
		}
		if after := g.head(t); after != before {
			t.Errorf("the push moved main from %s to %s", before, after)
		}

		var fetches, refused int
		for _, e := range r.only(audit.EventRequest) {
			if e.Proto != audit.ProtoHTTPS || e.Host != gitHost || e.Port != g.port || strings.Contains(e.Path, "?") {
				t.Errorf("request audited as %+v", decisionOf(e))
			}
			switch {
			case e.Path == "/repo.git/git-receive-pack":
				refused++
				if e.Method != "POST" || e.Decision != audit.DecisionDeny || e.Reason != "no_matching_rule" || e.Status != 403 {
					t.Errorf("push audited as %+v", decisionOf(e))
				}
			case e.Decision == audit.DecisionAllow:
				fetches++
				if e.Rule != "git-fetch" || e.Status != 200 {
					t.Errorf("fetch audited as %+v", decisionOf(e))
				}
			default:
				t.Errorf("unexpected request event %+v", decisionOf(e))
			}
		}
		// Clone: info/refs, then at least one upload-pack; push: info/refs.
		if fetches < 3 || refused == 0 {
			t.Errorf("%d allowed fetch requests and %d refused pushes, want >= 3 and >= 1; audit:\n%s", fetches, refused, r.dump())
		}
		if a, n := g.adverts.Load(), g.receives.Load(); a != 1 || n != 0 {
			t.Errorf("the server got %d receive-pack advertisements and %d pushes, want 1 and 0", a, n)
		}
	})
}
