package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/meta"
)

// Namespace rules (room config by name prefix) live in the meta group, as
// the application settings multiraft stores for us, and reach each data
// group as an fsm namespaces command in that group's own log, proposed by
// the group's leader: a data group's state machine cannot read the meta
// group while it applies, and the command makes the rules part of the
// group's replicated state. The meta index that recorded a rule set is its
// revision, so a leader that proposes a set twice, or a new leader that
// proposes one its predecessor already did, changes nothing.

// settings is the JSON the meta group holds for this application.
type settings struct {
	Namespaces []fsm.Namespace `json:"namespaces,omitempty"`
}

func decodeSettings(b []byte) (settings, error) {
	var s settings
	if len(b) == 0 {
		return s, nil
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("rooms: decode cluster settings: %w", err)
	}
	return s, nil
}

// checkNamespaces sorts rules by prefix and refuses a set a data group
// would refuse, so an operator hears of it at once rather than in the logs
// of every group leader.
func checkNamespaces(rules []fsm.Namespace) ([]fsm.Namespace, error) {
	rules = slices.Clone(rules)
	slices.SortFunc(rules, func(a, b fsm.Namespace) int { return strings.Compare(a.Prefix, b.Prefix) })
	ns := fsm.Namespaces{Rules: rules}
	if err := ns.Validate(fsm.DefaultRoomConfig); err != nil {
		return nil, err
	}
	return rules, nil
}

// BootstrapSettings encodes the namespace rules a new cluster starts with,
// for multiraft.BootstrapSpec.AppSettings. Even without rules the cluster
// gets settings: a cluster founded by this release can use the room options
// it added from the start (see EnableRoomOptions).
func BootstrapSettings(rules []fsm.Namespace) ([]byte, error) {
	if len(rules) == 0 {
		return json.Marshal(settings{})
	}
	rules, err := checkNamespaces(rules)
	if err != nil {
		return nil, fmt.Errorf("rooms: bootstrap namespaces: %w", err)
	}
	return json.Marshal(settings{Namespaces: rules})
}

// Namespaces returns the cluster's namespace rules, sorted by prefix, read
// linearizably from the meta group, and their revision (0: never set).
func (s *Service) Namespaces(ctx context.Context) ([]fsm.Namespace, uint64, error) {
	st, err := s.host.MetaState(ctx)
	if err != nil {
		return nil, 0, err
	}
	set, err := decodeSettings(st.AppSettings)
	if err != nil {
		return nil, 0, err
	}
	return set.Namespaces, st.AppSettingsIndex, nil
}

// SetNamespace adds the rule for ns.Prefix or replaces it, and returns the
// new revision.
func (s *Service) SetNamespace(ctx context.Context, ns fsm.Namespace) (uint64, error) {
	return s.changeNamespaces(ctx, func(rules []fsm.Namespace) ([]fsm.Namespace, error) {
		rules = slices.DeleteFunc(rules, func(r fsm.Namespace) bool { return r.Prefix == ns.Prefix })
		return append(rules, ns), nil
	})
}

// ErrNoNamespace is DeleteNamespace's answer for a prefix without a rule.
var ErrNoNamespace = errors.New("rooms: no namespace with this prefix")

// DeleteNamespace removes the rule for prefix and returns the new revision.
func (s *Service) DeleteNamespace(ctx context.Context, prefix string) (uint64, error) {
	return s.changeNamespaces(ctx, func(rules []fsm.Namespace) ([]fsm.Namespace, error) {
		i := slices.IndexFunc(rules, func(r fsm.Namespace) bool { return r.Prefix == prefix })
		if i < 0 {
			return nil, fmt.Errorf("%w: %q", ErrNoNamespace, prefix)
		}
		return slices.Delete(rules, i, i+1), nil
	})
}

// EnableRoomOptions records in the meta group that the cluster uses the
// room options added with namespaces (client_publish, presence_history,
// max_members, namespace rules): nodes then mark their sockets' publishes
// for rooms to tell them from the backend's. Replicas of an earlier
// release cannot read the mark or the new options and would skip those
// entries, diverging from the others, so this must wait until every node
// runs this release. Setting a namespace does it too; a cluster founded by
// this release has it from the start.
func (s *Service) EnableRoomOptions(ctx context.Context) error {
	if _, rev := s.host.AppSettings(); rev > 0 {
		return nil
	}
	st, err := s.host.MetaState(ctx)
	if err != nil || st.AppSettingsIndex > 0 {
		return err
	}
	b, err := json.Marshal(settings{})
	if err != nil {
		return err
	}
	if _, err = s.host.SetAppSettings(ctx, b, 0); errors.Is(err, meta.ErrConflict) {
		return nil // someone else did it first
	}
	return err
}

// changeNamespaces is a read-modify-write of the rules, compare-and-set on
// their revision, so two operators' changes cannot lose one another.
func (s *Service) changeNamespaces(ctx context.Context, change func([]fsm.Namespace) ([]fsm.Namespace, error)) (uint64, error) {
	for attempt := 0; ; attempt++ {
		st, err := s.host.MetaState(ctx)
		if err != nil {
			return 0, err
		}
		set, err := decodeSettings(st.AppSettings)
		if err != nil {
			return 0, err
		}
		rules, err := change(slices.Clone(set.Namespaces))
		if err != nil {
			return 0, err
		}
		if set.Namespaces, err = checkNamespaces(rules); err != nil {
			return 0, fmt.Errorf("%w: %v", fsm.ErrInvalid, err)
		}
		b, err := json.Marshal(set)
		if err != nil {
			return 0, err
		}
		rev, err := s.host.SetAppSettings(ctx, b, st.AppSettingsIndex)
		if err == nil || !errors.Is(err, meta.ErrConflict) || attempt == 4 {
			return rev, err
		}
	}
}

// namespaceLoop has this node's group leaders bring their groups' rules up
// to the meta group's revision. Checking is cheap (a local comparison per
// led group), so it polls rather than tracking leader and meta changes.
func (s *Service) namespaceLoop(ctx context.Context) {
	t := time.NewTicker(namespaceSyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.syncNamespaces(ctx)
	}
}

const namespaceSyncInterval = 250 * time.Millisecond

func (s *Service) syncNamespaces(ctx context.Context) {
	raw, rev := s.host.AppSettings()
	if rev == 0 {
		return
	}
	var cmd []byte
	for _, g := range s.host.LocalGroups() {
		if g == multiraft.MetaGroup {
			continue
		}
		if !s.leaderHere(g) {
			continue
		}
		f, ok := s.localFSM(g)
		if !ok || f.NamespacesRevision() >= rev {
			continue
		}
		if cmd == nil {
			set, err := decodeSettings(raw)
			if err != nil {
				s.cfg.Logger.Error("cannot read the cluster's namespace rules", "revision", rev, "err", err)
				return
			}
			cmd = (&fsm.Command{Op: fsm.OpNamespaces, Namespaces: fsm.Namespaces{Revision: rev, Rules: set.Namespaces}}).Encode()
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		res, err := s.propose(pctx, g, cmd)
		cancel()
		if err == nil && res.Err != nil {
			err = res.Err
		}
		if err != nil && ctx.Err() == nil {
			s.cfg.Logger.Warn("cannot bring a group's namespace rules up to date; retrying", "group", g, "revision", rev, "err", err)
		}
	}
}
