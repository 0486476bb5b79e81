package mempolicy

import (
	"strings"
	"testing"
	"testing/fstest"
)

func envOf(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// Machines as their /proc/self/cgroup and cgroup files show them.
var (
	noCgroup = fstest.MapFS{}
	// A container on cgroup v2: the namespace makes its group the root.
	v2Container = fstest.MapFS{
		"proc/self/cgroup":         {Data: []byte("0::/\n")},
		"sys/fs/cgroup/memory.max": {Data: []byte("2147483648\n")},
	}
	v2Unlimited = fstest.MapFS{
		"proc/self/cgroup":         {Data: []byte("0::/\n")},
		"sys/fs/cgroup/memory.max": {Data: []byte("max\n")},
	}
	// A systemd service on a v2 host: the limit is on its own group.
	v2Host = fstest.MapFS{
		"proc/self/cgroup":                                     {Data: []byte("0::/system.slice/herald.service\n")},
		"sys/fs/cgroup/memory.max":                             {Data: []byte("max\n")},
		"sys/fs/cgroup/system.slice/herald.service/memory.max": {Data: []byte("1073741824\n")},
	}
	v1Container = fstest.MapFS{
		"proc/self/cgroup":                           {Data: []byte("12:pids:/\n4:memory:/\n0::/\n")},
		"sys/fs/cgroup/memory/memory.limit_in_bytes": {Data: []byte("536870912\n")},
	}
	// cgroup v1 without a limit writes the largest page-aligned int64.
	v1Unlimited = fstest.MapFS{
		"proc/self/cgroup":                           {Data: []byte("4:memory:/process_api/ad07\n")},
		"sys/fs/cgroup/memory/memory.limit_in_bytes": {Data: []byte("9223372036854771712\n")},
	}
	v1Host = fstest.MapFS{
		"proc/self/cgroup":                                  {Data: []byte("9:name=systemd:/\n4:cpu,memory:/herald\n")},
		"sys/fs/cgroup/memory/memory.limit_in_bytes":        {Data: []byte("9223372036854771712\n")},
		"sys/fs/cgroup/memory/herald/memory.limit_in_bytes": {Data: []byte("1000000000\n")},
	}
	garbled = fstest.MapFS{
		"sys/fs/cgroup/memory.max": {Data: []byte("lots\n")},
	}
)

func TestDecide(t *testing.T) {
	tests := []struct {
		name string
		in   Input
		want Policy
	}{
		{"defaults without a cgroup limit", Input{Env: envOf(), FS: noCgroup},
			Policy{GCPercent: DefaultGCPercent, SetGCPercent: true, GCPercentFrom: "default", LimitFrom: "none"}},
		{"nil file system", Input{},
			Policy{GCPercent: DefaultGCPercent, SetGCPercent: true, GCPercentFrom: "default", LimitFrom: "none"}},
		{"cgroup v2 container", Input{Env: envOf(), FS: v2Container},
			Policy{GCPercent: DefaultGCPercent, SetGCPercent: true, GCPercentFrom: "default",
				Limit: 1932735283, SetLimit: true, LimitFrom: "cgroup", CgroupLimit: 2 << 30}},
		{"cgroup v2 max", Input{Env: envOf(), FS: v2Unlimited},
			Policy{GCPercent: DefaultGCPercent, SetGCPercent: true, GCPercentFrom: "default", LimitFrom: "none"}},
		{"cgroup v2 service group on a host", Input{Env: envOf(), FS: v2Host},
			Policy{GCPercent: DefaultGCPercent, SetGCPercent: true, GCPercentFrom: "default",
				Limit: 966367641, SetLimit: true, LimitFrom: "cgroup", CgroupLimit: 1 << 30}},
		{"cgroup v1 container", Input{Env: envOf(), FS: v1Container},
			Policy{GCPercent: DefaultGCPercent, SetGCPercent: true, GCPercentFrom: "default",
				Limit: 483183820, SetLimit: true, LimitFrom: "cgroup", CgroupLimit: 512 << 20}},
		{"cgroup v1 unlimited", Input{Env: envOf(), FS: v1Unlimited},
			Policy{GCPercent: DefaultGCPercent, SetGCPercent: true, GCPercentFrom: "default", LimitFrom: "none"}},
		{"cgroup v1 group with several controllers", Input{Env: envOf(), FS: v1Host},
			Policy{GCPercent: DefaultGCPercent, SetGCPercent: true, GCPercentFrom: "default",
				Limit: 900000000, SetLimit: true, LimitFrom: "cgroup", CgroupLimit: 1000000000}},

		// The runtime's variables win over the derived defaults, and are
		// left for the runtime to apply.
		{"GOGC env", Input{Env: envOf("GOGC", "200"), FS: noCgroup},
			Policy{GCPercent: 200, GCPercentFrom: "GOGC", LimitFrom: "none"}},
		{"GOGC=off env with a cgroup limit", Input{Env: envOf("GOGC", "off"), FS: v2Container},
			Policy{GCPercent: -1, GCPercentFrom: "GOGC",
				Limit: 1932735283, SetLimit: true, LimitFrom: "cgroup", CgroupLimit: 2 << 30}},
		{"empty GOGC is unset", Input{Env: envOf("GOGC", ""), FS: noCgroup},
			Policy{GCPercent: DefaultGCPercent, SetGCPercent: true, GCPercentFrom: "default", LimitFrom: "none"}},
		{"GOMEMLIMIT env over the cgroup", Input{Env: envOf("GOMEMLIMIT", "1GiB"), FS: v2Container},
			Policy{GCPercent: DefaultGCPercent, SetGCPercent: true, GCPercentFrom: "default",
				Limit: 1 << 30, LimitFrom: "GOMEMLIMIT", CgroupLimit: 2 << 30}},
		{"GOMEMLIMIT=off env over the cgroup", Input{Env: envOf("GOMEMLIMIT", "off"), FS: v2Container},
			Policy{GCPercent: DefaultGCPercent, SetGCPercent: true, GCPercentFrom: "default",
				LimitFrom: "GOMEMLIMIT", CgroupLimit: 2 << 30}},

		// Herald's flags win over the runtime's variables.
		{"--gc-percent over GOGC", Input{Env: envOf("GOGC", "200"), FS: noCgroup, GCPercent: 50, GCPercentSet: true},
			Policy{GCPercent: 50, SetGCPercent: true, GCPercentFrom: "--gc-percent", LimitFrom: "none"}},
		{"--memory-limit over GOMEMLIMIT and the cgroup", Input{Env: envOf("GOMEMLIMIT", "1GiB"), FS: v2Container, MemoryLimit: "512MiB"},
			Policy{GCPercent: DefaultGCPercent, SetGCPercent: true, GCPercentFrom: "default",
				Limit: 512 << 20, SetLimit: true, LimitFrom: "--memory-limit", CgroupLimit: 2 << 30}},
		{"--memory-limit none over the cgroup", Input{Env: envOf(), FS: v2Container, MemoryLimit: "none"},
			Policy{GCPercent: DefaultGCPercent, SetGCPercent: true, GCPercentFrom: "default",
				SetLimit: true, LimitFrom: "--memory-limit", CgroupLimit: 2 << 30}},
		{"--memory-limit auto is the default", Input{Env: envOf(), FS: v1Container, MemoryLimit: "auto"},
			Policy{GCPercent: DefaultGCPercent, SetGCPercent: true, GCPercentFrom: "default",
				Limit: 483183820, SetLimit: true, LimitFrom: "cgroup", CgroupLimit: 512 << 20}},
		{"collector off with a limit", Input{Env: envOf(), FS: noCgroup, GCPercent: -1, GCPercentSet: true, MemoryLimit: "1GiB"},
			Policy{GCPercent: -1, SetGCPercent: true, GCPercentFrom: "--gc-percent",
				Limit: 1 << 30, SetLimit: true, LimitFrom: "--memory-limit"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decide(tt.in)
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if got != tt.want {
				t.Fatalf("Decide:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestDecideRefuses(t *testing.T) {
	tests := []struct {
		name    string
		in      Input
		wantErr string
	}{
		{"collector off without a limit", Input{Env: envOf(), FS: noCgroup, GCPercent: -1, GCPercentSet: true}, "there is none"},
		{"collector off with --memory-limit none", Input{Env: envOf(), FS: v2Container, GCPercent: -1, GCPercentSet: true, MemoryLimit: "none"}, "there is none"},
		{"gc percent below -1", Input{Env: envOf(), FS: noCgroup, GCPercent: -2, GCPercentSet: true}, "--gc-percent -2"},
		{"bad size", Input{Env: envOf(), FS: noCgroup, MemoryLimit: "2GB"}, `--memory-limit "2GB"`},
		{"negative size", Input{Env: envOf(), FS: noCgroup, MemoryLimit: "-1"}, `--memory-limit "-1"`},
		{"garbled cgroup file", Input{Env: envOf(), FS: garbled}, "is not a number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decide(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Decide: %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseAndFormatSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		fmt  string
	}{
		{"0", 0, "0B"},
		{"1073741824", 1 << 30, "1GiB"},
		{"1536MiB", 1536 << 20, "1536MiB"},
		{"2 GiB", 2 << 30, "2GiB"},
		{"3TiB", 3 << 40, "3TiB"},
		{"100KiB", 100 << 10, "100KiB"},
		{"1000B", 1000, "1000B"},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
		if f := FormatSize(got); f != tt.fmt {
			t.Errorf("FormatSize(%d) = %q, want %q", got, f, tt.fmt)
		}
	}
	for _, bad := range []string{"", "GiB", "1.5GiB", "2GB", "9999999TiB", "-5"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}
