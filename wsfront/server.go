package wsfront

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/lxzan/gws"

	"github.com/heraldhq/herald/internal/wait"
	"github.com/heraldhq/herald/wsfront/auth"
)

// Server is a node's client port: websocket sessions on /ws and the HTTP
// endpoints beside them.
type Server struct {
	cfg      Config
	be       Backend
	log      *slog.Logger
	obs      Observer
	verifier *auth.Verifier
	hub      *hub
	adm      *admission
	mux      *http.ServeMux
	http     *http.Server

	// limitsJSON is the limits object of every auth reply, built once.
	limitsJSON []byte

	// One upgrader answers clients that offer herald.v1, the other those
	// that offer no sub-protocol at all (gws refuses the latter when
	// sub-protocols are configured).
	withProto, noProto *gws.Upgrader

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // session goroutines, sweeper
	reads  byteBudget     // history pages in flight on this node

	mu       sync.Mutex
	sessions map[*session]struct{}
	closing  bool

	// blockMu guards blocks, the users whose auth is refused until the
	// time given (BlockUser). An auth checks it and sets its identity
	// under blockMu, so that a block and the disconnect after it cannot
	// both miss a socket authenticating meanwhile.
	blockMu sync.Mutex
	blocks  map[string]time.Time
}

// New builds a front (zero fields of cfg take DefaultConfig's values);
// Serve starts it.
func New(cfg Config) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	verifier, err := auth.New(cfg.Auth)
	if err != nil {
		return nil, fmt.Errorf("wsfront: auth: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:      cfg,
		be:       cfg.Backend,
		log:      cfg.Logger,
		obs:      cfg.Observer,
		verifier: verifier,
		mux:      http.NewServeMux(),
		ctx:      ctx,
		cancel:   cancel,
		sessions: make(map[*session]struct{}),
	}
	s.limitsJSON = limitsJSON(cfg.Limits)
	s.hub = newHub(ctx, s.be, s.log, cfg.Limits.RequestTimeout)
	maxSockets, derived := cfg.Limits.MaxSockets, cfg.Limits.MaxSockets == 0
	if derived {
		maxSockets = DefaultMaxSockets()
	}
	// Logged at start so that an operator can tell the derived limit from
	// the log alone.
	s.log.Info("websocket limits", "max_sockets", maxSockets, "derived_from_open_files_limit", derived,
		"open_files_limit", openFilesLimit(), "max_sockets_per_ip", cfg.Limits.MaxSocketsPerIP,
		"max_sockets_per_user", cfg.Limits.MaxSocketsPerUser)
	s.adm = newAdmission(cfg.Limits, maxSockets, s.log, s.obs)
	opt := func(protocols []string) *gws.ServerOption {
		return &gws.ServerOption{
			// gws buffers a whole frame before OnMessage, so this is
			// what one socket's read may cost; see Limits.hardFrame.
			ReadMaxPayloadSize: cfg.Limits.hardFrame(),
			ReadBufferSize:     1024,
			WriteBufferSize:    1024,
			CheckUtf8Enabled:   true,
			HandshakeTimeout:   cfg.Limits.HandshakeTimeout,
			SubProtocols:       protocols,
			NewSession:         func() gws.SessionStorage { return &session{} },
			Recovery:           gws.Recovery,
			Logger:             gwsLogger{s.log},
		}
	}
	s.withProto = gws.NewUpgrader(s, opt([]string{Subprotocol}))
	s.noProto = gws.NewUpgrader(s, opt(nil))
	s.mux.HandleFunc("GET /ws", s.serveWS)
	s.mux.HandleFunc("GET /healthz", s.serveHealth)
	s.mux.HandleFunc("GET /readyz", s.serveReady)
	s.http = &http.Server{
		Handler:           bodyDeadline(s.mux, cfg.Limits.IdleTimeout),
		ReadHeaderTimeout: cfg.Limits.HandshakeTimeout,
		// An idle keep-alive connection holds a file descriptor as a
		// socket does, but no socket limit counts it.
		IdleTimeout: cfg.Limits.IdleTimeout,
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.sweep()
	}()
	return s, nil
}

// bodyDeadline gives every request but a websocket upgrade d to deliver
// its body. net/http reads what a handler left unread before it answers,
// and the server has no ReadTimeout (it would reach into the sockets), so
// a request that announced a body and sent none held its connection and a
// goroutine for good, on any route and before any login.
func bodyDeadline(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ws" {
			// An error means the connection cannot take one (HTTP/2
			// without it): nothing to do but serve.
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(d))
		}
		h.ServeHTTP(w, r)
	})
}

// Handle adds an HTTP endpoint on the client port (admin API, pages). Add
// endpoints before Serve (herald.Config.Mount is the place): one added
// later answers 404 to the requests that come first.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Serve accepts connections on l until Shutdown; it returns
// http.ErrServerClosed after a shutdown.
func (s *Server) Serve(l net.Listener) error { return s.http.Serve(l) }

// Shutdown stops accepting, closes every socket with 1001 (going away) and
// waits, within ctx, for the sockets' leaves and goroutines to finish.
func (s *Server) Shutdown(ctx context.Context) error {
	sessions := s.stopAccepting()
	httpErr := s.http.Shutdown(ctx)
	for _, sess := range sessions {
		sess.closeWith(closeGoingAway, "node is stopping; reconnect to another node")
	}
	// Leaves of the closed sessions are proposed with their own bound
	// (LeaveTimeout); wait for them before stopping feeds and sweeper.
	done := make(chan struct{})
	go func() {
		s.waitSessions()
		s.cancel()
		s.wg.Wait()
		s.hub.wait()
		close(done)
	}()
	select {
	case <-done:
		return httpErr
	case <-ctx.Done():
		s.cancel()
		return errors.Join(httpErr, fmt.Errorf("wsfront: shutdown: %w", ctx.Err()))
	}
}

// waitSessions returns once every session has closed and finished its work.
func (s *Server) waitSessions() {
	for {
		s.mu.Lock()
		n := len(s.sessions)
		s.mu.Unlock()
		if n == 0 {
			return
		}
		if !wait.Sleep(s.ctx, 10*time.Millisecond) {
			return
		}
	}
}

// Drain makes the node unready (/readyz answers 503) and refuses new
// sockets, while existing ones keep working: the first step of a graceful
// stop, so that load balancers and clients move to other nodes.
func (s *Server) Drain() {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
}

// MaxSockets is the node-wide socket limit in force: Limits.MaxSockets, or
// the default derived from the open-files limit.
func (s *Server) MaxSockets() int { return s.adm.max }

// Sessions is the number of open sockets.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	up := s.noProto
	if offered := r.Header.Get("Sec-WebSocket-Protocol"); offered != "" {
		up = nil
		for p := range strings.SplitSeq(offered, ",") {
			if strings.TrimSpace(p) == Subprotocol {
				up = s.withProto
			}
		}
		if up == nil {
			http.Error(w, "this node speaks sub-protocol "+Subprotocol+" only", http.StatusBadRequest)
			return
		}
	}
	if origin := r.Header.Get("Origin"); origin != "" && !s.originAllowed(origin) {
		http.Error(w, "origin "+origin+" may not open sockets on this node (see the allowed origins setting)", http.StatusForbidden)
		return
	}
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		http.Error(w, "node is stopping", http.StatusServiceUnavailable)
		return
	}
	// Limits are checked before the upgrade, so that a refused client gets
	// an HTTP status it can act on and its connection is closed at once.
	key := clientKey(r.RemoteAddr)
	switch s.adm.admitConn(key) {
	case RefusedMaxSockets:
		refuseSocket(w, http.StatusServiceUnavailable, fmt.Sprintf(
			"this node holds its maximum of %d websockets; connect to another node or retry later", s.adm.max))
		return
	case RefusedPerIP:
		refuseSocket(w, http.StatusTooManyRequests, fmt.Sprintf(
			"your address holds its maximum of %d websockets on this node; close one or retry later", s.adm.perIP))
		return
	}
	conn, err := up.Upgrade(w, r)
	if err != nil {
		s.adm.releaseConn(key)
		s.log.Debug("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	sess, ok := conn.Session().(*session)
	if !ok {
		s.adm.releaseConn(key)
		_ = conn.NetConn().Close()
		return
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		s.adm.releaseConn(key)
		_ = conn.WriteClose(closeGoingAway, []byte("node is stopping"))
		return
	}
	sess.init(s, conn, key, r.RemoteAddr)
	s.sessions[sess] = struct{}{}
	s.obs.SocketOpened() // under mu: the count never disagrees with Sessions
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		conn.ReadLoop()
	}()
}

// refuseSocket answers an upgrade over a socket limit. The connection is
// closed after the answer: keeping it alive would hold the very file
// descriptor the limit protects.
func refuseSocket(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Connection", "close")
	w.Header().Set("Retry-After", "5")
	http.Error(w, msg, status)
}

func (s *Server) removeSession(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess)
	s.obs.SocketClosed()
	s.mu.Unlock()
}

func (s *Server) serveHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"ok":true}` + "\n"))
}

func (s *Server) serveReady(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	err := s.be.Ready()
	if err == nil && closing {
		err = errors.New("node is stopping")
	}
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		b, _ := json.Marshal(map[string]any{"ok": false, "reason": err.Error()})
		_, _ = w.Write(append(b, '\n'))
		return
	}
	var notes []string
	if rn, ok := s.be.(ReadyNoter); ok {
		notes = rn.ReadyNotes()
	}
	if len(notes) == 0 {
		_, _ = w.Write([]byte(`{"ok":true}` + "\n"))
		return
	}
	b, _ := json.Marshal(map[string]any{"ok": true, "degraded": notes})
	_, _ = w.Write(append(b, '\n'))
}

// sweep pings every socket each PingInterval (browsers answer pings
// without the app's help, which keeps idle sockets alive) and closes the
// sockets that stayed silent too long or never authenticated.
func (s *Server) sweep() {
	lim := s.cfg.Limits
	tick := min(lim.PingInterval, lim.AuthTimeout/2, lim.IdleTimeout/4)
	t := time.NewTicker(tick)
	defer t.Stop()
	lastPing := time.Now()
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			ping := now.Sub(lastPing) >= lim.PingInterval
			if ping {
				lastPing = now
			}
			s.mu.Lock()
			sessions := make([]*session, 0, len(s.sessions))
			for sess := range s.sessions {
				sessions = append(sessions, sess)
			}
			s.mu.Unlock()
			for _, sess := range sessions {
				sess.sweep(now, ping)
			}
			s.adm.tick()
			if ping {
				s.pruneBlocks(now)
			}
		}
	}
}

// gws event handlers: each session does the work.

// OnOpen implements gws.Event.
func (s *Server) OnOpen(conn *gws.Conn) {}

// OnClose implements gws.Event.
func (s *Server) OnClose(conn *gws.Conn, err error) {
	if sess, ok := conn.Session().(*session); ok && sess.srv != nil {
		sess.closed(err)
	}
}

// OnPing implements gws.Event.
func (s *Server) OnPing(conn *gws.Conn, payload []byte) {
	if sess, ok := conn.Session().(*session); ok && sess.srv != nil {
		sess.touch()
	}
	_ = conn.WritePong(payload)
}

// OnPong implements gws.Event.
func (s *Server) OnPong(conn *gws.Conn, _ []byte) {
	if sess, ok := conn.Session().(*session); ok && sess.srv != nil {
		sess.touch()
	}
}

// OnMessage implements gws.Event.
func (s *Server) OnMessage(conn *gws.Conn, msg *gws.Message) {
	defer msg.Close()
	if sess, ok := conn.Session().(*session); ok && sess.srv != nil {
		sess.message(msg)
	}
}

// gwsLogger sends gws's own complaints to the node's log.
type gwsLogger struct{ log *slog.Logger }

func (l gwsLogger) Error(v ...any) { l.log.Error("websocket", "detail", fmt.Sprint(v...)) }

// stopAccepting refuses new sockets from now on and returns the open ones.
func (s *Server) stopAccepting() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing = true
	sessions := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	return sessions
}

// Abort cuts every socket without a close frame and without leaving the
// rooms they joined, as a crash of the node would.
func (s *Server) Abort() {
	sessions := s.stopAccepting()
	_ = s.http.Close()
	for _, sess := range sessions {
		sess.abort()
	}
	s.cancel()
}

// originAllowed applies Config.AllowedOrigins to a browser's Origin header.
func (s *Server) originAllowed(origin string) bool {
	if len(s.cfg.AllowedOrigins) == 0 {
		if !s.verifier.Insecure() {
			return true
		}
		u, err := url.Parse(origin)
		if err != nil {
			return false
		}
		host := u.Hostname()
		if host == "localhost" {
			return true
		}
		ip := net.ParseIP(host)
		return ip != nil && ip.IsLoopback()
	}
	for _, o := range s.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}
