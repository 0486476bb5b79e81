package auth

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Action is something an identity may be allowed to do in a room.
type Action uint8

const (
	Join Action = iota + 1
	Publish
	Read
)

// actionCount sizes the per-action grant table, which action a indexes at
// a-1; Read is the last action.
const actionCount = int(Read)

func (a Action) String() string {
	switch a {
	case Join:
		return "join"
	case Publish:
		return "publish"
	case Read:
		return "read"
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

const (
	maxUserBytes = 256
	// maxPatterns bounds the work and memory one token can demand when it
	// is compiled, whatever its issuer put in it.
	maxPatterns     = 1000
	maxPatternBytes = 1024
)

// Identity is a verified user and the rooms it may act on. Its grants never
// change once it is made, so the goroutines serving a connection may share
// it without locking.
type Identity struct {
	User    string
	Expires time.Time // the token's "exp"; zero: no expiry

	// leeway is the verifier's allowance for clock skew, kept so that the
	// token is valid for the same span on every request as at auth.
	leeway time.Duration
	grants [actionCount]grant
}

// Can reports whether the identity may do action a on room. A nil identity
// may do nothing.
func (id *Identity) Can(a Action, room string) bool {
	if id == nil || a < Join || a > Read {
		return false
	}
	return id.grants[a-1].matches(room)
}

// Expired reports whether the identity's token has expired at now: at
// Expires plus the verifier's leeway, the same instant from which Token
// refuses it. Without the leeway here a token a few seconds past its exp
// would pass auth and then fail every request.
func (id *Identity) Expired(now time.Time) bool {
	if id == nil {
		return true
	}
	return !id.Expires.IsZero() && !now.Before(id.Expires.Add(id.leeway))
}

// grant is the compiled set of room patterns for one action.
type grant struct {
	exact map[string]struct{}
	// prefixes is sorted and no element is a prefix of another, so the
	// only candidate for a room is the greatest prefix not above it.
	prefixes []string
}

func (g *grant) matches(room string) bool {
	if _, ok := g.exact[room]; ok {
		return true
	}
	i, found := slices.BinarySearch(g.prefixes, room)
	if found {
		return true
	}
	return i > 0 && strings.HasPrefix(room, g.prefixes[i-1])
}

// everyRoom grants every action on every room.
func everyRoom() [actionCount]grant {
	var gs [actionCount]grant
	for i := range gs {
		gs[i].prefixes = []string{""}
	}
	return gs
}

type grantBuilder struct {
	exact    map[string]struct{}
	prefixes []string
}

func (b *grantBuilder) add(pattern string) {
	if p, ok := strings.CutSuffix(pattern, "*"); ok {
		b.prefixes = append(b.prefixes, p)
		return
	}
	if b.exact == nil {
		b.exact = make(map[string]struct{})
	}
	b.exact[pattern] = struct{}{}
}

func (b *grantBuilder) build() grant {
	slices.Sort(b.prefixes)
	// In sorted order the names starting with a prefix follow it without a
	// gap, so comparing with the last kept prefix drops every redundant one.
	kept := b.prefixes[:0]
	for _, p := range b.prefixes {
		if len(kept) > 0 && strings.HasPrefix(p, kept[len(kept)-1]) {
			continue
		}
		kept = append(kept, p)
	}
	return grant{exact: b.exact, prefixes: slices.Clip(kept)}
}

// heraldList is one key of the "herald" claim and the actions its patterns
// grant.
type heraldList struct {
	name    string
	actions []Action
}

var heraldLists = [...]heraldList{
	{"rooms", []Action{Join, Publish, Read}},
	{"join", []Action{Join}},
	{"publish", []Action{Publish}},
	{"read", []Action{Read}},
}

// parseGrants compiles the "herald" claim as decoded from JSON.
func parseGrants(claim any) ([actionCount]grant, error) {
	var gs [actionCount]grant
	if claim == nil {
		return gs, nil
	}
	obj, ok := claim.(map[string]any)
	if !ok {
		return gs, fmt.Errorf("herald claim must be an object, not %s", jsonType(claim))
	}
	if unknown := unknownKeys(obj); len(unknown) > 0 {
		return gs, fmt.Errorf("herald claim has unknown key %.40q (known: rooms, join, publish, read)", unknown[0])
	}
	var builders [actionCount]grantBuilder
	total := 0
	for _, k := range heraldLists {
		v := obj[k.name]
		if v == nil {
			continue
		}
		list, ok := v.([]any)
		if !ok {
			return gs, fmt.Errorf("herald.%s must be a list of strings, not %s", k.name, jsonType(v))
		}
		total += len(list)
		if total > maxPatterns {
			return gs, fmt.Errorf("herald claim has more than %d room patterns", maxPatterns)
		}
		for i, item := range list {
			pattern, ok := item.(string)
			if !ok {
				return gs, fmt.Errorf("herald.%s[%d] must be a string, not %s", k.name, i, jsonType(item))
			}
			if err := checkPattern(pattern); err != nil {
				return gs, fmt.Errorf("herald.%s[%d]: %w", k.name, i, err)
			}
			for _, a := range k.actions {
				builders[a-1].add(pattern)
			}
		}
	}
	for i := range builders {
		gs[i] = builders[i].build()
	}
	return gs, nil
}

func unknownKeys(obj map[string]any) []string {
	var unknown []string
	for key := range obj {
		if !slices.ContainsFunc(heraldLists[:], func(l heraldList) bool { return l.name == key }) {
			unknown = append(unknown, key)
		}
	}
	// Sorted so that a token with several bad keys always gets the same error.
	slices.Sort(unknown)
	return unknown
}

func checkPattern(p string) error {
	switch {
	case p == "":
		return errors.New("empty room pattern")
	case len(p) > maxPatternBytes:
		return fmt.Errorf("room pattern is %d bytes, limit %d", len(p), maxPatternBytes)
	case strings.Contains(p[:len(p)-1], "*"):
		return errors.New(`"*" may only end a room pattern`)
	}
	return nil
}

// checkUser applies the user name rules, which match the member name rules
// of the room state machine so that any verified user can join a room.
func checkUser(what, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%s is empty", what)
	case len(name) > maxUserBytes:
		return fmt.Errorf("%s is %d bytes, limit %d", what, len(name), maxUserBytes)
	case !utf8.ValidString(name):
		return fmt.Errorf("%s is not valid UTF-8", what)
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return fmt.Errorf("%s contains a control character", what)
	}
	return nil
}

// jsonType names the JSON type of a value decoded by encoding/json.
func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case float64:
		return "a number"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
