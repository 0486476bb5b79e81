package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lxzan/gws"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The raw gws baseline is a minimal broadcast server on the same websocket
// library as Herald's front, speaking just enough of herald.v1 (auth,
// subscribe, publish) for the same load: no consensus, no storage, no
// limits. It runs in a child process (this binary again, with roleEnv set)
// so that its memory is measured like a Herald node's.
const roleEnv = "HERALD_BENCH_ROLE"

const roleRawGWS = "raw-gws-server"

type rawServer struct {
	up *gws.Upgrader

	mu    sync.Mutex
	rooms map[string]*rawRoom
}

type rawRoom struct {
	mu   sync.Mutex
	seq  uint64
	subs map[*gws.Conn]struct{}
}

// rawSess is a socket's state; like Herald's front it replaces gws's
// default session map, which would cost every socket a map.
type rawSess struct {
	mu    sync.Mutex
	user  string
	rooms []*rawRoom
}

func (*rawSess) Len() int                     { return 0 }
func (*rawSess) Load(string) (any, bool)      { return nil, false }
func (*rawSess) Delete(string)                {}
func (*rawSess) Store(string, any)            {}
func (*rawSess) Range(func(string, any) bool) {}

type rawRequest struct {
	ID   json.RawMessage `json:"id"`
	Op   string          `json:"op"`
	Room string          `json:"room"`
	User string          `json:"user"`
	Data json.RawMessage `json:"data"`
}

func newRawServer() *rawServer {
	s := &rawServer{rooms: map[string]*rawRoom{}}
	// The same buffer sizes and checks as Herald's front.
	s.up = gws.NewUpgrader(s, &gws.ServerOption{
		ReadMaxPayloadSize: 256 << 10,
		ReadBufferSize:     1024,
		WriteBufferSize:    1024,
		CheckUtf8Enabled:   true,
		HandshakeTimeout:   10 * time.Second,
		SubProtocols:       []string{"herald.v1"},
		NewSession:         func() gws.SessionStorage { return &rawSess{} },
		Recovery:           gws.Recovery,
	})
	return s
}

func (s *rawServer) room(name string) *rawRoom {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[name]
	if r == nil {
		r = &rawRoom{subs: map[*gws.Conn]struct{}{}}
		s.rooms[name] = r
	}
	return r
}

func (s *rawServer) serveWS(w http.ResponseWriter, r *http.Request) {
	conn, err := s.up.Upgrade(w, r)
	if err != nil {
		return
	}
	go conn.ReadLoop()
}

func (s *rawServer) OnOpen(*gws.Conn) {}

func (s *rawServer) OnClose(conn *gws.Conn, _ error) {
	sess := conn.Session().(*rawSess)
	sess.mu.Lock()
	rooms := sess.rooms
	sess.rooms = nil
	sess.mu.Unlock()
	for _, r := range rooms {
		r.mu.Lock()
		delete(r.subs, conn)
		r.mu.Unlock()
	}
}

func (s *rawServer) OnPing(conn *gws.Conn, payload []byte) { _ = conn.WritePong(payload) }
func (s *rawServer) OnPong(*gws.Conn, []byte)              {}

func rawReply(id json.RawMessage, rest string) []byte {
	b := make([]byte, 0, 64)
	b = append(b, `{"id":`...)
	b = append(b, id...)
	b = append(b, rest...)
	return append(b, '}')
}

func (s *rawServer) OnMessage(conn *gws.Conn, msg *gws.Message) {
	defer msg.Close()
	var req rawRequest
	if err := json.Unmarshal(msg.Bytes(), &req); err != nil || len(req.ID) == 0 {
		_ = conn.WriteMessage(gws.OpcodeText, []byte(`{"id":null,"ok":false,"error":{"code":"bad_request","message":"bad frame","retryable":false}}`))
		return
	}
	sess := conn.Session().(*rawSess)
	switch req.Op {
	case "auth":
		sess.mu.Lock()
		sess.user = req.User
		sess.mu.Unlock()
		_ = conn.WriteMessage(gws.OpcodeText, rawReply(req.ID, `,"ok":true,"user":"`+req.User+`","node":"raw"`))
	case "ping":
		_ = conn.WriteMessage(gws.OpcodeText, rawReply(req.ID, `,"ok":true,"pong":true`))
	case "subscribe":
		r := s.room(req.Room)
		r.mu.Lock()
		r.subs[conn] = struct{}{}
		last := r.seq
		r.mu.Unlock()
		sess.mu.Lock()
		sess.rooms = append(sess.rooms, r)
		sess.mu.Unlock()
		_ = conn.WriteMessage(gws.OpcodeText, rawReply(req.ID, `,"ok":true,"epoch":"1","last_seq":`+strconv.FormatUint(last, 10)))
	case "publish":
		sess.mu.Lock()
		user := sess.user
		sess.mu.Unlock()
		r := s.room(req.Room)
		r.mu.Lock()
		r.seq++
		seq := r.seq
		ev := make([]byte, 0, 128+len(req.Room)+len(user)+len(req.Data))
		ev = append(ev, `{"ev":"event","room":`...)
		ev = strconv.AppendQuote(ev, req.Room)
		ev = append(ev, `,"epoch":"1","seq":`...)
		ev = strconv.AppendUint(ev, seq, 10)
		ev = append(ev, `,"type":"message","member":`...)
		ev = strconv.AppendQuote(ev, user)
		ev = append(ev, `,"data":`...)
		ev = append(ev, req.Data...)
		ev = append(ev, `,"ts":"`...)
		ev = time.Now().UTC().AppendFormat(ev, time.RFC3339Nano)
		ev = append(ev, `"}`...)
		b := gws.NewBroadcaster(gws.OpcodeText, ev)
		for c := range r.subs {
			_ = b.Broadcast(c)
		}
		r.mu.Unlock()
		_ = b.Close()
		_ = conn.WriteMessage(gws.OpcodeText, rawReply(req.ID, `,"ok":true,"seq":`+strconv.FormatUint(seq, 10)+`,"epoch":"1","duplicate":false`))
	default:
		_ = conn.WriteMessage(gws.OpcodeText, rawReply(req.ID, `,"ok":false,"error":{"code":"bad_request","message":"unknown op","retryable":false}`))
	}
}

// rawServerMain is the child process's body: it serves until its stdin
// closes (the parent ended) or it gets SIGTERM.
func rawServerMain() {
	addr := os.Getenv("HERALD_BENCH_RAW_ADDR")
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "raw gws server:", err)
		os.Exit(1)
	}
	s := newRawServer()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", s.serveWS)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.Handle("GET /metrics", promhttp.Handler())
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	fmt.Printf("URL ws://%s/ws\n", l.Addr())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	stdinClosed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()
	select {
	case <-sigs:
	case <-stdinClosed:
	}
	os.Exit(0)
}

// startRawGWS starts the raw gws baseline server as a child process.
func startRawGWS(ctx context.Context) (_ *target, err error) {
	p, out, err := startChild("raw-gws", roleEnv+"="+roleRawGWS)
	if err != nil {
		return nil, err
	}
	t := &target{kind: "raw-gws", procs: []*proc{p}, client: &http.Client{Timeout: 60 * time.Second}}
	defer func() {
		if err != nil {
			t.close()
		}
	}()
	urlCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "URL "); ok {
				urlCh <- rest
			}
		}
	}()
	select {
	case u := <-urlCh:
		p.wsURL, p.httpBase = u, httpBase(u)
	case <-p.done:
		return nil, fmt.Errorf("the raw gws server exited: %s", p.out.String())
	case <-time.After(30 * time.Second):
		return nil, errors.New("the raw gws server did not start in 30s")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	t.urls = []string{p.wsURL}
	return t, nil
}
