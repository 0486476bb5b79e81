package wsfront

import (
	"net/netip"
	"testing"
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
