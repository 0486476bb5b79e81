// Package mempolicy decides the Go runtime's garbage collector settings
// (GOGC and GOMEMLIMIT) of the herald binary from its flags, the
// environment and the cgroup memory limit of its container.
//
// It belongs to the binary, not to herald.Start: a program that embeds a
// node owns its runtime and sets these itself. Decide is pure (the
// environment and the file system come in as arguments) so that every
// precedence rule is tested; Apply is the one call that changes the
// process.
//
//	p, err := mempolicy.Decide(mempolicy.Input{
//		Env: os.LookupEnv, FS: os.DirFS("/"),
//		GCPercent: 50, GCPercentSet: c.IsSet("gc-percent"), MemoryLimit: c.String("memory-limit"),
//	})
//	if err != nil { ... }
//	p.Apply()
//	logger.Info("memory policy", p.LogAttrs()...)
package mempolicy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path"
	"runtime/debug"
	"strconv"
	"strings"
)

// DefaultGCPercent is the binary's GOGC when neither --gc-percent nor
// GOGC says otherwise. Go's own 100 lets the heap grow to twice what is
// live before collecting, and a node's live heap is mostly badger's
// memtable arenas, allocated whole and barely touched: their size alone
// buys tens of megabytes of headroom that the garbage of connecting
// sockets fills and the runtime then keeps. 25 halved the RSS per idle
// socket, for a few percent more CPU on the publish path; both are
// measured in docs/benchmarks.md.
const DefaultGCPercent = 25

// DefaultLimitFraction is the share of the cgroup memory limit given to
// GOMEMLIMIT when --memory-limit is auto: the rest is for what the Go
// runtime does not count (badger's memory-mapped tables, the kernel's
// socket buffers) before the kernel's OOM killer acts.
const DefaultLimitFraction = 0.9

// Policy is what Apply does to the runtime. A setting whose Set field is
// false is left as the runtime has it (from GOGC or GOMEMLIMIT).
type Policy struct {
	GCPercent    int // -1 turns the collector off until the memory limit
	SetGCPercent bool
	// GCPercentFrom says where GCPercent came from: "--gc-percent",
	// "GOGC", or "default".
	GCPercentFrom string

	Limit    int64 // bytes; 0 means none
	SetLimit bool
	// LimitFrom says where Limit came from: "--memory-limit", "GOMEMLIMIT",
	// "cgroup" (a share of the container's limit), or "none".
	LimitFrom string
	// CgroupLimit is the container's memory limit found, 0 if none.
	CgroupLimit int64
}

// Input is what Decide reads.
type Input struct {
	// Env looks up an environment variable (os.LookupEnv).
	Env func(string) (string, bool)
	// FS is the root file system (os.DirFS("/")), for /proc/self/cgroup
	// and the cgroup limits under /sys/fs/cgroup. Nil skips the cgroup.
	FS fs.FS
	// GCPercent is --gc-percent; GCPercentSet says the operator gave it
	// (flag, HERALD_GC_PERCENT or config file), which wins over GOGC.
	GCPercent    int
	GCPercentSet bool
	// MemoryLimit is --memory-limit: "auto" or "" (a share of the cgroup
	// limit, unless GOMEMLIMIT is set), "none", or a size in GOMEMLIMIT's
	// syntax (bytes, or a number with B, KiB, MiB, GiB or TiB), which wins
	// over GOMEMLIMIT.
	MemoryLimit string
}

// Decide works out the policy. The operator's explicit choices win: a
// herald flag over the Go runtime's environment variable, and either over
// the defaults derived here.
func Decide(in Input) (Policy, error) {
	env := in.Env
	if env == nil {
		env = func(string) (string, bool) { return "", false }
	}
	var p Policy
	switch v, ok := env("GOGC"); {
	case in.GCPercentSet:
		if in.GCPercent < -1 {
			return p, fmt.Errorf("--gc-percent %d: want -1 (off) or more", in.GCPercent)
		}
		p.GCPercent, p.SetGCPercent, p.GCPercentFrom = in.GCPercent, true, "--gc-percent"
	case ok && strings.TrimSpace(v) != "":
		// The runtime read GOGC at start; report what it holds without
		// touching it (an unparsable GOGC means 100 to the runtime).
		p.GCPercent, p.GCPercentFrom = parseGOGC(v), "GOGC"
	default:
		p.GCPercent, p.SetGCPercent, p.GCPercentFrom = DefaultGCPercent, true, "default"
	}

	cg, err := cgroupLimit(in.FS)
	if err != nil {
		return p, err
	}
	p.CgroupLimit = cg
	spec := strings.TrimSpace(in.MemoryLimit)
	switch v, ok := env("GOMEMLIMIT"); {
	case spec != "" && !strings.EqualFold(spec, "auto"):
		if strings.EqualFold(spec, "none") {
			p.Limit, p.SetLimit, p.LimitFrom = 0, true, "--memory-limit"
			break
		}
		n, err := ParseSize(spec)
		if err != nil {
			return p, fmt.Errorf("--memory-limit %q: %w (or auto, or none)", spec, err)
		}
		p.Limit, p.SetLimit, p.LimitFrom = n, true, "--memory-limit"
	case ok && strings.TrimSpace(v) != "":
		n, err := ParseSize(v)
		if err != nil || n == math.MaxInt64 {
			n = 0
		}
		p.Limit, p.LimitFrom = n, "GOMEMLIMIT"
	case cg > 0:
		p.Limit, p.SetLimit, p.LimitFrom = int64(float64(cg)*DefaultLimitFraction), true, "cgroup"
	default:
		p.LimitFrom = "none"
	}
	if p.SetGCPercent && p.GCPercent < 0 && p.Limit == 0 {
		return p, errors.New("--gc-percent -1 turns the collector off until the memory limit, and there is none: give --memory-limit, or run in a container with a memory limit")
	}
	return p, nil
}

// Apply sets the runtime's GOGC and memory limit as decided.
func (p Policy) Apply() {
	if p.SetGCPercent {
		debug.SetGCPercent(p.GCPercent)
	}
	if p.SetLimit {
		limit := p.Limit
		if limit == 0 {
			limit = math.MaxInt64 // the runtime's "no limit"
		}
		debug.SetMemoryLimit(limit)
	}
}

// LogAttrs are the policy as slog key-value pairs, for the start log.
func (p Policy) LogAttrs() []any {
	gc := strconv.Itoa(p.GCPercent)
	if p.GCPercent < 0 {
		gc = "off"
	}
	limit := "none"
	if p.Limit > 0 {
		limit = FormatSize(p.Limit)
	}
	attrs := []any{"gc_percent", gc, "gc_percent_from", p.GCPercentFrom, "memory_limit", limit, "memory_limit_from", p.LimitFrom}
	if p.CgroupLimit > 0 {
		attrs = append(attrs, "cgroup_memory_limit", FormatSize(p.CgroupLimit))
	}
	return attrs
}

func parseGOGC(v string) int {
	v = strings.TrimSpace(v)
	if strings.EqualFold(v, "off") {
		return -1
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 100
	}
	return n
}

var sizeUnits = []struct {
	suffix string
	mult   int64
}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

// ParseSize reads a byte count the way the runtime reads GOMEMLIMIT: a
// non-negative integer with an optional unit B, KiB, MiB, GiB or TiB.
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "off") {
		return math.MaxInt64, nil
	}
	mult := int64(1)
	for _, u := range sizeUnits {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, errors.New("want a byte count such as 2GiB, 512MiB or 1073741824")
	}
	if n > math.MaxInt64/mult {
		return 0, errors.New("too large")
	}
	return n * mult, nil
}

// FormatSize writes n in the largest unit of ParseSize that divides it.
func FormatSize(n int64) string {
	for _, u := range sizeUnits[:len(sizeUnits)-1] {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// cgroupUnlimited is the smallest value taken as "no limit": cgroup v1
// writes an unlimited group's limit as the largest page-aligned int64
// (9223372036854771712), and no machine has 4 EiB.
const cgroupUnlimited = 1 << 62

// cgroupLimit finds the memory limit of the process's cgroup, 0 if there
// is none or it cannot be read. cgroup v2 is tried first (memory.max),
// then v1 (memory/memory.limit_in_bytes). In a container the cgroup
// namespace makes the process's own group the root of /sys/fs/cgroup; on
// a host the group's path from /proc/self/cgroup is tried as well, and the
// smallest limit found wins.
func cgroupLimit(fsys fs.FS) (int64, error) {
	if fsys == nil {
		return 0, nil
	}
	v2Path, v1Path := selfCgroups(fsys)
	var best int64
	take := func(file string) error {
		b, err := fs.ReadFile(fsys, file)
		if err != nil {
			return nil // no such controller or file here
		}
		s := string(bytes.TrimSpace(b))
		if s == "max" || s == "" {
			return nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("cgroup memory limit in /%s: %q is not a number", file, s)
		}
		if n > 0 && n < cgroupUnlimited && (best == 0 || n < best) {
			best = n
		}
		return nil
	}
	v2 := []string{"sys/fs/cgroup/memory.max"}
	if v2Path != "" {
		v2 = append(v2, path.Join("sys/fs/cgroup", v2Path, "memory.max"))
	}
	for _, f := range v2 {
		if err := take(f); err != nil {
			return 0, err
		}
	}
	if best > 0 {
		return best, nil
	}
	v1 := []string{"sys/fs/cgroup/memory/memory.limit_in_bytes"}
	if v1Path != "" {
		v1 = append(v1, path.Join("sys/fs/cgroup/memory", v1Path, "memory.limit_in_bytes"))
	}
	for _, f := range v1 {
		if err := take(f); err != nil {
			return 0, err
		}
	}
	return best, nil
}

// selfCgroups reads /proc/self/cgroup: the v2 group ("0::/path") and the
// v1 memory controller's group ("N:memory:/path"), relative to the root.
func selfCgroups(fsys fs.FS) (v2, v1 string) {
	b, err := fs.ReadFile(fsys, "proc/self/cgroup")
	if err != nil {
		return "", ""
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		p := strings.Trim(parts[2], "/")
		if p == "" || strings.Contains(p, "..") {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2 = p
		case strings.Contains(","+parts[1]+",", ",memory,"):
			v1 = p
		}
	}
	return v2, v1
}
