package wsfront

import (
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// Reasons a socket is refused, as reported to Observer.SocketRefused.
const (
	RefusedMaxSockets = "max_sockets" // the node holds Limits.MaxSockets sockets
	RefusedPerIP      = "per_ip"      // the client address holds MaxSocketsPerIP
	RefusedPerUser    = "per_user"    // the user holds MaxSocketsPerUser
)

// nearLimitPercent is how full the node's socket budget gets before the
// front warns, so that an operator hears of it before sockets are refused.
const nearLimitPercent = 90

// limitWarnInterval spaces the front's warnings about socket limits: a
// flood of sockets must not become a flood of log lines.
const limitWarnInterval = time.Minute

// admission counts the sockets of a node (node-wide, per client address and
// per user) and refuses those over a limit. A socket counts from the moment
// it is admitted, before its upgrade, until its connection closes: what is
// counted is file descriptors, so a socket still leaving its rooms after
// its connection closed no longer counts.
type admission struct {
	max, perIP, perUser int // max > 0; perIP and perUser 0 mean no limit
	log                 *slog.Logger
	obs                 Observer
	now                 func() time.Time // time.Now; tests move it

	mu      sync.Mutex
	total   int                  // guarded by mu
	byAddr  map[netip.Prefix]int // guarded by mu
	byUser  map[string]int       // guarded by mu
	warn    limitWarning         // guarded by mu
	nearMin int                  // total at which the node is near its limit
}

// limitWarning is what the next rate-limited warning reports.
type limitWarning struct {
	last        time.Time
	refused     map[string]int
	lastAddr    string
	lastUser    string
	pendingNear bool
}

func newAdmission(lim Limits, maxSockets int, log *slog.Logger, obs Observer) *admission {
	return &admission{
		max:     maxSockets,
		perIP:   lim.MaxSocketsPerIP,
		perUser: lim.MaxSocketsPerUser,
		log:     log,
		obs:     obs,
		now:     time.Now,
		byAddr:  make(map[netip.Prefix]int),
		byUser:  make(map[string]int),
		warn:    limitWarning{refused: make(map[string]int)},
		nearMin: max(1, maxSockets*nearLimitPercent/100),
	}
}

// clientKey is what MaxSocketsPerIP counts by: an IPv4 address, or the /64
// of an IPv6 address, since one IPv6 host commonly holds a whole /64. The
// zero Prefix (an address that does not parse) is never limited.
func clientKey(remoteAddr string) netip.Prefix {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return netip.Prefix{}
	}
	a := ap.Addr().Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}

// admitConn counts a new connection, or names the limit it is over.
func (a *admission) admitConn(key netip.Prefix) (refused string) {
	a.mu.Lock()
	switch {
	case a.total >= a.max:
		refused = RefusedMaxSockets
	case a.perIP > 0 && key.IsValid() && a.byAddr[key] >= a.perIP:
		refused = RefusedPerIP
	default:
		a.total++
		if key.IsValid() {
			a.byAddr[key]++
		}
	}
	logArgs := a.noteLocked(refused, key.String(), "")
	a.mu.Unlock()
	a.report(refused, logArgs)
	return refused
}

// releaseConn undoes admitConn.
func (a *admission) releaseConn(key netip.Prefix) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total--
	if key.IsValid() {
		if a.byAddr[key]--; a.byAddr[key] <= 0 {
			delete(a.byAddr, key)
		}
	}
}

// admitUser counts an authenticated socket of user, or reports that the
// user already holds MaxSocketsPerUser sockets on this node.
func (a *admission) admitUser(user, addr string) bool {
	if a.perUser <= 0 {
		return true
	}
	a.mu.Lock()
	refused := ""
	if a.byUser[user] >= a.perUser {
		refused = RefusedPerUser
	} else {
		a.byUser[user]++
	}
	logArgs := a.noteLocked(refused, addr, user)
	a.mu.Unlock()
	a.report(refused, logArgs)
	return refused == ""
}

// releaseUser undoes a successful admitUser.
func (a *admission) releaseUser(user string) {
	if a.perUser <= 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.byUser[user]--; a.byUser[user] <= 0 {
		delete(a.byUser, user)
	}
}

// tick logs what no warning reported yet (refusals made within
// limitWarnInterval of the last warning) once the interval has passed, and
// repeats the warning while the node stays near its limit; the sweeper
// calls it, so a warning does not wait for the next socket.
func (a *admission) tick() {
	a.mu.Lock()
	logArgs := a.noteLocked("", "", "")
	a.mu.Unlock()
	a.report("", logArgs)
}

// noteLocked records a refusal or a node near its limit, and returns the
// attributes of a warning when one is due: at most one per
// limitWarnInterval, summing up what happened since the last one.
func (a *admission) noteLocked(refused, addr, user string) []any {
	w := &a.warn
	if refused != "" {
		w.refused[refused]++
		w.lastAddr, w.lastUser = addr, user
	} else if a.total >= a.nearMin {
		w.pendingNear = true
	}
	if len(w.refused) == 0 && !w.pendingNear {
		return nil
	}
	now := a.now()
	if !w.last.IsZero() && now.Sub(w.last) < limitWarnInterval {
		return nil
	}
	args := []any{"open", a.total, "max_sockets", a.max,
		"max_sockets_per_ip", a.perIP, "max_sockets_per_user", a.perUser}
	for _, reason := range []string{RefusedMaxSockets, RefusedPerIP, RefusedPerUser} {
		if n := w.refused[reason]; n > 0 {
			args = append(args, "refused_"+reason, n)
		}
	}
	if len(w.refused) > 0 {
		args = append(args, "last_refused_addr", w.lastAddr)
		if w.lastUser != "" {
			args = append(args, "last_refused_user", w.lastUser)
		}
	}
	if !w.last.IsZero() {
		args = append(args, "since", now.Sub(w.last).Round(time.Second).String())
	}
	w.last = now
	w.refused = make(map[string]int)
	w.lastAddr, w.lastUser, w.pendingNear = "", "", false
	return args
}

// report tells the observer of a refusal and logs a due warning, outside
// the lock.
func (a *admission) report(refused string, logArgs []any) {
	if refused != "" {
		a.obs.SocketRefused(refused)
	}
	if logArgs != nil {
		a.log.Warn("websockets near or over the node's socket limits; sockets over a limit are refused (see herald_ws_sockets_refused_total)", logArgs...)
	}
}
