package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/heraldhq/herald/admin"
	"github.com/heraldhq/herald/fsm"
	"github.com/heraldhq/herald/internal/testnet"
	"github.com/heraldhq/herald/internal/wstest"
	"github.com/heraldhq/herald/multiraft"
	"github.com/heraldhq/herald/multiraft/meta"
	"github.com/heraldhq/herald/multiraft/transport"
)

// The peer-port attacks of a stranger on the network, against real serve
// processes: a peer that proves nothing, one with a wrong cluster secret,
// a replayed handshake, a CA-signed certificate of another node, and a
// member-less identity. Each must be refused before any RPC runs, and the
// cluster's state and leaderships must be what they were.

const attackGroups = 4

// attacker is a transport endpoint speaking the real peer protocol.
func attacker(t *testing.T, id string, mod func(*transport.Config)) *transport.Manager {
	t.Helper()
	cfg := transport.Config{NodeID: id, ListenAddr: "127.0.0.1:0", DialTimeout: 2 * time.Second, RPCTimeout: 3 * time.Second,
		Logger: slog.New(slog.DiscardHandler)}
	if mod != nil {
		mod(&cfg)
	}
	m, err := transport.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// snapshotLeaders records every group's leader and term.
func snapshotLeaders(t *testing.T, url string) map[uint64]string {
	t.Helper()
	cl := admin.NewClient(url, "secret")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		st, err := cl.Status(ctx)
		if err == nil && st.Health.Verdict == admin.HealthOK {
			out := map[uint64]string{}
			for _, g := range st.GroupList {
				out[g.ID] = fmt.Sprintf("%s@%d", g.Leader, g.Term)
			}
			return out
		}
		if ctx.Err() != nil {
			t.Fatalf("cluster not healthy: %v %+v", err, st)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var attackTransports sync.Map // *transport.Manager → *transport.GroupTransport

// attackGroup returns m's transport for group g, registering it once.
func attackGroup(m *transport.Manager, g uint64) (*transport.GroupTransport, error) {
	if gt, ok := attackTransports.Load(m); ok {
		return gt.(*transport.GroupTransport), nil
	}
	gt, err := m.Group(g)
	if err == nil {
		attackTransports.Store(m, gt)
	}
	return gt, err
}

// tryEverything runs every peer RPC an attacker would want and returns
// the errors; a nil entry means the RPC ran.
func tryEverything(m *transport.Manager, addr string) map[string]error {
	ctx := context.Background()
	room := "attack"
	g := meta.GroupForKey(room, attackGroups)
	out := map[string]error{}
	_, out["read the cluster state"] = m.Call(ctx, raft.ServerAddress(addr), "mr.meta.state", multiraft.MetaGroup, nil)
	pub := (&fsm.Command{Op: fsm.OpPublish, Room: room, Member: "alice", Data: []byte(`"forged"`)}).Encode()
	_, out["publish as alice"] = m.Call(ctx, raft.ServerAddress(addr), "mr.propose", g, pub)
	del := (&fsm.Command{Op: fsm.OpRoomDelete, Room: "control"}).Encode()
	_, out["delete a room"] = m.Call(ctx, raft.ServerAddress(addr), "mr.propose", meta.GroupForKey("control", attackGroups), del)
	gt, err := attackGroup(m, g)
	if err == nil {
		args := raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("n2"), Addr: []byte(addr)}, Term: 1000, PrevLogEntry: 0, PrevLogTerm: 0}
		err = gt.AppendEntries("n1", raft.ServerAddress(addr), &args, new(raft.AppendEntriesResponse))
	}
	out["depose the leader with term 1000"] = err
	return out
}

func TestPeerPortAttacksRefused(t *testing.T) {
	dir := t.TempDir()
	secret := []byte("3f0c6a1d9b2e4f5a8c7d6e5f4a3b2c1d")
	secretFile := writePrivate(t, filepath.Join(dir, "secret"), append(secret, '\n'))
	cl := startServeCluster(t, dir, 3, append([]string{"--groups", fmt.Sprint(attackGroups), "--insecure-auth", "--admin-token", "secret",
		"--cluster-secret-file", secretFile}, fastElections...)...)
	// A room the attacks try to delete, made by a real client.
	c := wstest.Login(t, cl.ws(0), "bob")
	if r, _ := c.TryCall("publish", wstest.Obj{"room": "control", "data": "real"}); r == nil || r["ok"] != true {
		t.Fatalf("publish to the control room: %v", r)
	}
	before := snapshotLeaders(t, cl.url(0))

	attackers := map[string]*transport.Manager{
		"no secret":                attacker(t, "n2", nil),
		"wrong secret":             attacker(t, "n2", func(c *transport.Config) { c.ClusterSecret = []byte("a-wrong-guess-of-the-secret-0000") }),
		"right secret, not a node": attacker(t, "mallory", func(c *transport.Config) { c.ClusterSecret = secret }),
	}
	for name, m := range attackers {
		for i := range 3 {
			for what, err := range tryEverything(m, cl.peer(i)) {
				if what == "read the cluster state" && name == "right secret, not a node" {
					// Joining starts with it: whoever holds the secret
					// may join, and may read what it joins.
					continue
				}
				if err == nil {
					t.Errorf("%s: %s on n%d: it ran", name, what, i+1)
					continue
				}
				// The refusal must come from the handshake or the
				// membership check, not from raft or a handler.
				msg := err.Error()
				if !strings.Contains(msg, "cluster secret") && !strings.Contains(msg, "not a member") {
					t.Errorf("%s: %s on n%d: refused for another reason: %v", name, what, i+1, err)
				}
			}
		}
	}

	// A recorded handshake of a node that knows the secret, replayed.
	rec := testnet.NewProxy(t, cl.peer(0))
	legit := attacker(t, "n2", func(c *transport.Config) { c.ClusterSecret = secret })
	if _, err := legit.Call(context.Background(), raft.ServerAddress(rec.Addr()), "mr.meta.state", multiraft.MetaGroup, nil); err != nil {
		t.Fatalf("a call with the secret: %v", err)
	}
	got := testnet.Exchange(t, cl.peer(0), rec.Bytes(), 5*time.Second)
	if !bytes.Contains(got, []byte("authentication failed")) || bytes.Contains(got, []byte(`"cluster_id"`)) {
		t.Fatalf("replayed handshake: want a refusal and no cluster state, got %q", got)
	}

	// Nothing changed: same leaders in the same terms, the control room
	// intact, no forged message.
	after := snapshotLeaders(t, cl.url(0))
	for g, l := range before {
		if after[g] != l {
			t.Errorf("group %d: leader@term %s before the attacks, %s after", g, l, after[g])
		}
	}
	if r, _ := c.TryCall("history", wstest.Obj{"room": "control", "from_seq": 1}); r == nil || r["ok"] != true {
		t.Errorf("the control room after the attacks: %v", r)
	}
	if r, _ := c.TryCall("history", wstest.Obj{"room": "attack", "from_seq": 1}); r != nil && r["ok"] == true {
		if evs, _ := r["events"].([]any); len(evs) > 0 {
			t.Errorf("forged events in the attack room: %v", evs)
		}
	}
}

// TestPeerCertificateMustNameNode runs a node with peer mutual TLS: a
// certificate the cluster's CA signed for n3 does not let its holder speak
// as n2, and a node the cluster does not list may only join.
func TestPeerCertificateMustNameNode(t *testing.T) {
	dir := t.TempDir()
	ports := freePorts(t, 2)
	ca := newPEMCA(t)
	certFile, keyFile := ca.issueFiles(t, dir, "n1")
	caFile := writePrivate(t, filepath.Join(dir, "ca.pem"), ca.certPEM)
	peerAddr := fmt.Sprintf("127.0.0.1:%d", ports[1])
	startProc(t, "serve", "--node-id", "n1", "--data-dir", filepath.Join(dir, "n1"),
		"--client-addr", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--peer-addr", peerAddr,
		"--bootstrap", "n1="+peerAddr, "--groups", fmt.Sprint(attackGroups), "--replication", "1",
		"--insecure-auth", "--admin-token", "secret", "--log-level", "warn",
		"--peer-tls-cert", certFile, "--peer-tls-key", keyFile, "--peer-tls-ca", caFile)
	waitReady(t, fmt.Sprintf("http://127.0.0.1:%d", ports[0]), 60*time.Second)
	before := snapshotLeaders(t, fmt.Sprintf("http://127.0.0.1:%d", ports[0]))

	withCert := func(node string) func(*transport.Config) {
		cert := ca.issue(t, node)
		return func(c *transport.Config) {
			c.ClientTLS = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca.pool, MinVersion: tls.VersionTLS13}
		}
	}
	impostor := attacker(t, "n2", withCert("n3"))
	for what, err := range tryEverything(impostor, peerAddr) {
		if err == nil || !strings.Contains(err.Error(), `does not name node "n2"`) {
			t.Errorf("certificate of n3 speaking as n2: %s: %v", what, err)
		}
	}
	stranger := attacker(t, "n3", withCert("n3"))
	for what, err := range tryEverything(stranger, peerAddr) {
		if what == "read the cluster state" {
			// Joining starts with it; the stranger proved who it is.
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "not a member") {
			t.Errorf("a node the cluster does not list: %s: %v", what, err)
		}
	}
	after := snapshotLeaders(t, fmt.Sprintf("http://127.0.0.1:%d", ports[0]))
	for g, l := range before {
		if after[g] != l {
			t.Errorf("group %d: leader@term %s before, %s after", g, l, after[g])
		}
	}
}

// TestServeRefusesOpenPeerPort: a peer port off loopback needs a cluster
// secret or mutual TLS, or an explicit --insecure-peers that warns.
func TestServeRefusesOpenPeerPort(t *testing.T) {
	dir := t.TempDir()
	ports := freePorts(t, 2)
	args := []string{"serve", "--node-id", "n1", "--data-dir", filepath.Join(dir, "n1"), "--insecure-auth",
		"--client-addr", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--peer-addr", fmt.Sprintf("0.0.0.0:%d", ports[1]),
		"--advertise-peer-addr", fmt.Sprintf("127.0.0.1:%d", ports[1])}
	p := startProc(t, args...)
	if code := p.wait(t, 30*time.Second); code == 0 || !strings.Contains(p.output(), "--cluster-secret-file") {
		t.Fatalf("open peer port: exit %d\n%s", code, p.output())
	}
	p = startProc(t, append(args, "--cluster-secret", "short")...)
	if code := p.wait(t, 30*time.Second); code == 0 || !strings.Contains(p.output(), "at least 16") {
		t.Fatalf("short secret: exit %d\n%s", code, p.output())
	}
	p = startProc(t, append(args, "--insecure-peers")...)
	p.waitOutput(t, "peers are not authenticated", 30*time.Second)
}

// pemCA is a throwaway certificate authority for peer certificates.
type pemCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pool    *x509.CertPool
	certPEM []byte
}

func newPEMCA(t *testing.T) *pemCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "herald test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &pemCA{cert: cert, key: key, pool: pool, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *pemCA) issueDER(t *testing.T, node string) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: node},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

func (ca *pemCA) issue(t *testing.T, node string) tls.Certificate {
	der, key := ca.issueDER(t, node)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (ca *pemCA) issueFiles(t *testing.T, dir, node string) (certFile, keyFile string) {
	der, key := ca.issueDER(t, node)
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = writePrivate(t, filepath.Join(dir, node+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	keyFile = writePrivate(t, filepath.Join(dir, node+"-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
	return certFile, keyFile
}
