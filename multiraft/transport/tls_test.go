package transport

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// testCertSpec names what a test certificate says about its node.
type testCertSpec struct {
	cn   string
	dns  []string
	uris []string
}

// issueSpec makes a parsed leaf certificate from spec.
func (ca *testCA) issueSpec(t *testing.T, spec testCertSpec) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: spec.cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     spec.dns,
	}
	for _, u := range spec.uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// issue makes a node certificate valid for 127.0.0.1 as both server and
// client.
func (ca *testCA) issue(t *testing.T, node string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: node},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// mtls configures a node for mutual TLS with certificates from ca; clientCA
// is the CA whose certificate it presents when dialing.
func mtls(t *testing.T, ca, clientCA *testCA, node string) func(*Config) {
	cert := ca.issue(t, node)
	clientCert := clientCA.issue(t, node)
	return func(c *Config) {
		c.TLS = &tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    ca.pool,
			MinVersion:   tls.VersionTLS13,
		}
		c.ClientTLS = &tls.Config{
			Certificates: []tls.Certificate{clientCert},
			RootCAs:      ca.pool,
			MinVersion:   tls.VersionTLS13,
		}
	}
}

func TestMutualTLS(t *testing.T) {
	ca := newTestCA(t, "herald test CA")
	a := newTestManager(t, "a", mtls(t, ca, ca, "a"))
	b := newTestManager(t, "b", mtls(t, ca, ca, "b"))
	echo := func(ctx context.Context, from string, group uint64, req []byte) ([]byte, error) {
		return append([]byte(from+":"), req...), nil
	}
	a.Handle("echo", echo)
	b.Handle("echo", echo)
	ctx := context.Background()
	if got, err := b.Call(ctx, a.Addr(), "echo", 1, []byte("x")); err != nil || string(got) != "b:x" {
		t.Fatalf("b->a: %q %v", got, err)
	}
	if got, err := a.Call(ctx, b.Addr(), "echo", 1, []byte("y")); err != nil || string(got) != "a:y" {
		t.Fatalf("a->b: %q %v", got, err)
	}

	// Raft traffic, including a snapshot connection, works over TLS too.
	ga, gb := mustGroup(t, a, 1), mustGroup(t, b, 1)
	args := makeAppendRPC()
	resp := makeAppendRPCResponse()
	done := serveN(t, ga, 1, &args, &resp)
	if err := gb.AppendEntries("a", a.Addr(), &args, new(raft.AppendEntriesResponse)); err != nil {
		t.Fatal(err)
	}
	<-done
	go func() {
		rpc := <-ga.Consumer()
		buf := make([]byte, 3)
		_, _ = rpc.Reader.Read(buf)
		rpc.Respond(&raft.InstallSnapshotResponse{Success: string(buf) == "abc"}, nil)
	}()
	var sresp raft.InstallSnapshotResponse
	sargs := raft.InstallSnapshotRequest{Term: 1, Size: 3}
	if err := gb.InstallSnapshot("a", a.Addr(), &sargs, &sresp, stringsReader("abc")); err != nil || !sresp.Success {
		t.Fatalf("snapshot over TLS: %+v %v", sresp, err)
	}

	// A client whose certificate comes from another CA is refused.
	rogueCA := newTestCA(t, "rogue CA")
	rogue := newTestManager(t, "rogue", mtls(t, ca, rogueCA, "rogue"))
	if _, err := rogue.Call(ctx, a.Addr(), "echo", 1, nil); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("client with a foreign certificate: %v", err)
	}
	// So is one without any certificate, and one not speaking TLS.
	noCert := newTestManager(t, "nocert", func(c *Config) {
		c.ClientTLS = &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS13}
	})
	if _, err := noCert.Call(ctx, a.Addr(), "echo", 1, nil); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("client without a certificate: %v", err)
	}
	plain := newTestManager(t, "plain")
	if _, err := plain.Call(ctx, a.Addr(), "echo", 1, nil); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("plaintext client: %v", err)
	}
	// a still serves its legitimate peer.
	if _, err := b.Call(ctx, a.Addr(), "echo", 1, nil); err != nil {
		t.Fatal(err)
	}
}
