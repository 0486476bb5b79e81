package admin

import (
	"context"
	"errors"
	"net/http"

	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/rooms"
)

func (s *server) listNamespaces(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), roomTimeout)
	defer cancel()
	out, err := s.readNamespaces(ctx)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) readNamespaces(ctx context.Context) (Namespaces, error) {
	if !s.joined() {
		return Namespaces{}, s.notJoined()
	}
	rules, rev, err := s.node.Rooms().Namespaces(ctx)
	if err != nil {
		return Namespaces{}, err
	}
	out := Namespaces{Revision: rev, Namespaces: make([]Namespace, 0, len(rules))}
	for _, r := range rules {
		out.Namespaces = append(out.Namespaces, Namespace{Prefix: r.Prefix, RoomConfigChange: changeOf(r.Config, r.Mask)})
	}
	return out, nil
}

func (s *server) setNamespace(w http.ResponseWriter, r *http.Request) error {
	var req Namespace
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	ns, err := req.FSM()
	if err != nil {
		return err
	}
	if !s.joined() {
		return s.notJoined()
	}
	ctx, cancel := context.WithTimeout(r.Context(), roomTimeout)
	defer cancel()
	s.log.Info("setting a namespace", "prefix", req.Prefix, "config", req.RoomConfigChange)
	if _, err := s.node.Rooms().SetNamespace(ctx, ns); err != nil {
		return err
	}
	return s.listNamespaces(w, r)
}

func (s *server) deleteNamespace(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if !q.Has("prefix") {
		return badRequest("name the namespace to delete with ?prefix= (empty for the rule of rooms no other prefix matches)")
	}
	if !s.joined() {
		return s.notJoined()
	}
	ctx, cancel := context.WithTimeout(r.Context(), roomTimeout)
	defer cancel()
	prefix := q.Get("prefix")
	s.log.Info("deleting a namespace", "prefix", prefix)
	if _, err := s.node.Rooms().DeleteNamespace(ctx, prefix); err != nil {
		if errors.Is(err, rooms.ErrNoNamespace) {
			return notFound("namespace_not_found", "%v", err)
		}
		return err
	}
	return s.listNamespaces(w, r)
}

// FSM is the rule as the state machine takes it; an error names what is
// wrong with it. herald serve reads --namespaces-file with it.
func (n Namespace) FSM() (fsm.Namespace, error) {
	if n.Prefix != "" {
		if err := fsm.CheckRoomName(n.Prefix); err != nil {
			return fsm.Namespace{}, badRequest("prefix: %s", err)
		}
	}
	cfg, mask, err := n.fsm()
	if err != nil {
		return fsm.Namespace{}, err
	}
	return fsm.Namespace{Prefix: n.Prefix, Config: cfg, Mask: mask}, nil
}
