package wsfront

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestMaxSocketsFor(t *testing.T) {
	for _, tt := range []struct {
		nofile uint64
		want   int
	}{
		{0, fallbackMaxSockets}, // unknown
		{256, 128},              // the reserve is at most half
		{1024, 512},
		{2000, 1000},
		{10_000, 9000}, // the reserve is at least 1,000
		{20_000, 18_000},
		{1 << 20, 943_719}, // a tenth
		{^uint64(0), 1<<24 - 1<<24/10},
	} {
		if got := maxSocketsFor(tt.nofile); got != tt.want {
			t.Errorf("maxSocketsFor(%d) = %d, want %d", tt.nofile, got, tt.want)
		}
	}
	if DefaultMaxSockets() <= 0 {
		t.Fatalf("DefaultMaxSockets() = %d", DefaultMaxSockets())
	}
}

func TestClientKey(t *testing.T) {
	for _, tt := range []struct{ remote, want string }{
		{"127.0.0.2:5000", "127.0.0.2/32"},
		{"[::ffff:10.1.2.3]:80", "10.1.2.3/32"},
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::1]:443", "2001:db8:1:2::/64"}, // same /64
		{"[fe80::1%eth0]:1", "fe80::/64"},
	} {
		if got := clientKey(tt.remote); got.String() != tt.want {
			t.Errorf("clientKey(%q) = %v, want %s", tt.remote, got, tt.want)
		}
	}
	for _, bad := range []string{"", "pipe", "@", "1.2.3.4"} {
		if got := clientKey(bad); got.IsValid() {
			t.Errorf("clientKey(%q) = %v, want no key (not limited)", bad, got)
		}
	}
	if clientKey("10.0.0.1:1") == (netip.Prefix{}) {
		t.Fatal("an IPv4 address has no key")
	}
}

// Warnings come when the node nears its limit or refuses a socket, at most
// one per limitWarnInterval, and the next one sums up what the previous
// one could not report.
func TestAdmissionWarnings(t *testing.T) {
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	lim := Limits{MaxSocketsPerUser: 1}
	a := newAdmission(lim, 10, log, nopObserver{})
	now := time.Unix(1_000_000, 0)
	a.now = func() time.Time { return now }
	warnings := func() []string {
		lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
		if lines[0] == "" {
			return nil
		}
		return lines
	}
	key := clientKey("10.0.0.1:1")
	for range 8 {
		if r := a.admitConn(key); r != "" {
			t.Fatalf("refused below the limit: %s", r)
		}
	}
	if w := warnings(); len(w) != 0 {
		t.Fatalf("warned at 80%%: %q", w)
	}
	a.admitConn(key) // 90%
	if w := warnings(); len(w) != 1 || !strings.Contains(w[0], "open=9") {
		t.Fatalf("at 90%%: %q", w)
	}
	if !a.admitUser("mallory", "10.0.0.1:7") || a.admitUser("mallory", "10.0.0.1:8") {
		t.Fatal("per-user limit of 1 not applied")
	}
	a.tick()
	if w := warnings(); len(w) != 1 {
		t.Fatalf("warned again within the interval: %q", w)
	}
	now = now.Add(limitWarnInterval)
	a.tick()
	w := warnings()
	if len(w) != 2 || !strings.Contains(w[1], "refused_per_user=1") || !strings.Contains(w[1], "last_refused_user=mallory") ||
		!strings.Contains(w[1], "last_refused_addr=10.0.0.1:8") {
		t.Fatalf("the refusal was not reported after the interval: %q", w)
	}
	a.admitConn(key) // 10 of 10
	if r := a.admitConn(key); r != RefusedMaxSockets {
		t.Fatalf("11th socket of 10: %q", r)
	}
	for range 6 {
		a.releaseConn(key)
	}
	now = now.Add(limitWarnInterval)
	a.tick()
	if w := warnings(); len(w) != 3 || !strings.Contains(w[2], "refused_max_sockets=1") || !strings.Contains(w[2], "open=4") {
		t.Fatalf("node-wide refusal: %q", w)
	}
	now = now.Add(limitWarnInterval)
	a.tick()
	if w := warnings(); len(w) != 3 {
		t.Fatalf("warned below 90%% with nothing refused: %q", w)
	}
}
