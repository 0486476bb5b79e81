package main

import (
	"fmt"
	"slices"
	"strings"
)

// The baselines a run can measure beside Herald, as --baseline names them.
const (
	baseDefault   = "default" // the scenario's own: raw-commit or raw-gws
	baseNone      = "none"
	baseRawCommit = "raw-commit"
	baseRawGWS    = "raw-gws"
	baseJetStream = "jetstream"
)

// baselineScenarios says which scenarios each named baseline applies to.
var baselineScenarios = map[string][]string{
	baseRawCommit: {"publish"},
	baseRawGWS:    {"fanout", "conns"},
	baseJetStream: {"publish"},
}

// parseBaselines reads --baseline: a comma-separated list of baseline
// names, default or none. true and false still mean default and none:
// --baseline was once a switch, and scripts may say --baseline=false.
func parseBaselines(v string) ([]string, error) {
	var out []string
	for name := range strings.SplitSeq(v, ",") {
		name = strings.ToLower(strings.TrimSpace(name))
		switch name {
		case "":
			continue
		case "true":
			name = baseDefault
		case "false":
			name = baseNone
		}
		if _, ok := baselineScenarios[name]; !ok && name != baseDefault && name != baseNone {
			return nil, fmt.Errorf("--baseline %q: unknown baseline %q (want default, none, raw-commit, raw-gws or jetstream, comma-separated)", v, name)
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	if slices.Contains(out, baseNone) && len(out) > 1 {
		return nil, fmt.Errorf("--baseline %q: none excludes the others", v)
	}
	return out, nil
}

// checkBaselines refuses a baseline named for a scenario it does not
// apply to, which would otherwise be silently left out.
func checkBaselines(names []string, scenario string) error {
	for _, n := range names {
		if sc, ok := baselineScenarios[n]; ok && !slices.Contains(sc, scenario) {
			return fmt.Errorf("--baseline %s applies to %s, not to %s", n, strings.Join(sc, " and "), scenario)
		}
	}
	return nil
}

// baselinesFor is the set of baselines a scenario runs: default expands to
// the scenario's own, and names that do not apply to it are left out (the
// suite passes one list to every step).
func baselinesFor(names []string, scenario string) map[string]bool {
	want := map[string]bool{}
	for _, n := range names {
		switch n {
		case baseNone:
			return map[string]bool{}
		case baseDefault:
			switch scenario {
			case "publish":
				want[baseRawCommit] = true
			case "fanout", "conns":
				want[baseRawGWS] = true
			}
		default:
			if slices.Contains(baselineScenarios[n], scenario) {
				want[n] = true
			}
		}
	}
	return want
}

// JetStream's sync settings, as --jetstream-sync names them.
const (
	syncAlways  = "always"  // sync_interval: always, an fsync per write
	syncDefault = "default" // the server's periodic sync (2 minutes)
)

// parseSyncs reads --jetstream-sync.
func parseSyncs(v string) ([]string, error) {
	var out []string
	for s := range strings.SplitSeq(v, ",") {
		s = strings.ToLower(strings.TrimSpace(s))
		switch s {
		case "":
			continue
		case syncAlways, syncDefault:
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		default:
			return nil, fmt.Errorf("--jetstream-sync %q: unknown setting %q (want always and/or default)", v, s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--jetstream-sync %q: name always, default or both", v)
	}
	return out, nil
}
