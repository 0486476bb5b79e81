package transport

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"path"
	"strings"
)

// The handshake authenticates the two ends of a connection before any frame
// is read. Four messages:
//
//	hello     dialer → acceptor: magic, version, kind, node id, nonce
//	challenge acceptor → dialer: magic, version, status, node id (or an
//	          error), flags, nonce, and the acceptor's proof when the
//	          cluster secret is in use
//	proof     dialer → acceptor: the dialer's proof (only with the secret)
//	verdict   acceptor → dialer: status and, on refusal, the reason
//
// A proof is HMAC-SHA256 under the cluster secret over a direction label,
// the connection kind, both node ids, both nonces and, on TLS connections,
// keying material exported from the TLS session. Each side's nonce is fresh,
// so a recorded handshake cannot be replayed, the secret never crosses the
// wire, and on TLS the proof is bound to the session it was made in. With
// mutual TLS, the certificate each side presents must also name the node id
// it claims (certNames).

const (
	nonceLen = 32
	macLen   = sha256.Size

	// flagSecret in the challenge says the acceptor requires the cluster
	// secret; both ends must agree on it.
	flagSecret byte = 1 << 0

	labelAcceptor = "herald peer v2 acceptor"
	labelDialer   = "herald peer v2 dialer"
	labelTLS      = "EXPORTER-herald-peer-auth"

	// MinClusterSecretLen is the shortest cluster secret accepted: 16
	// bytes, the strength of a 128-bit key.
	MinClusterSecretLen = 16
)

// errAuthFailed is what a peer that failed to prove the cluster secret is
// told: nothing about why.
var errAuthFailed = errors.New("authentication failed: this node's cluster secret differs (check --cluster-secret on both nodes)")

// hello is the dialer's first message.
type hello struct {
	kind   byte
	nodeID string
	nonce  [nonceLen]byte
}

func writeHello(w io.Writer, h hello) error {
	b := make([]byte, 0, 7+len(h.nodeID)+nonceLen)
	b = append(b, handshakeMagic[:]...)
	b = append(b, protocolVersion, h.kind, byte(len(h.nodeID)))
	b = append(b, h.nodeID...)
	b = append(b, h.nonce[:]...)
	_, err := w.Write(b)
	return err
}

// readHello reads the dialer's hello on the accepting side. A version it
// does not speak is reported separately so the acceptor can explain it.
func readHello(r io.Reader) (h hello, version byte, err error) {
	var head [7]byte
	if _, err = io.ReadFull(r, head[:]); err != nil {
		return h, 0, fmt.Errorf("transport: reading hello: %w", err)
	}
	if [4]byte(head[:4]) != handshakeMagic {
		return h, 0, fmt.Errorf("transport: bad handshake magic %q", head[:4])
	}
	version, h.kind = head[4], head[5]
	if version != protocolVersion {
		// Do not read further: an older peer's hello has no nonce.
		return h, version, fmt.Errorf("transport: unsupported protocol version %d (this node speaks %d; upgrade every node of the cluster to the same release)", version, protocolVersion)
	}
	id := make([]byte, head[6])
	if _, err = io.ReadFull(r, id); err != nil {
		return h, version, fmt.Errorf("transport: reading hello: %w", noEOF(err))
	}
	if _, err = io.ReadFull(r, h.nonce[:]); err != nil {
		return h, version, fmt.Errorf("transport: reading hello: %w", noEOF(err))
	}
	if h.kind != kindMux && h.kind != kindSnapshot {
		return h, version, fmt.Errorf("transport: unknown connection kind %d", h.kind)
	}
	if len(id) == 0 {
		return h, version, errors.New("transport: empty node id in hello")
	}
	h.nodeID = string(id)
	return h, version, nil
}

// challenge is the acceptor's answer to a hello.
type challenge struct {
	nodeID string
	flags  byte
	nonce  [nonceLen]byte
	mac    [macLen]byte // with flagSecret
}

func writeChallenge(w io.Writer, c challenge) error {
	b := make([]byte, 0, 7+len(c.nodeID)+1+nonceLen+macLen)
	b = append(b, handshakeMagic[:]...)
	b = append(b, protocolVersion, statusOK, byte(len(c.nodeID)))
	b = append(b, c.nodeID...)
	b = append(b, c.flags)
	b = append(b, c.nonce[:]...)
	if c.flags&flagSecret != 0 {
		b = append(b, c.mac[:]...)
	}
	_, err := w.Write(b)
	return err
}

// writeRefusal answers a hello with an error instead of a challenge.
func writeRefusal(w io.Writer, herr error) error {
	text := truncate(herr.Error(), 255)
	b := make([]byte, 0, 7+len(text))
	b = append(b, handshakeMagic[:]...)
	b = append(b, protocolVersion, statusErr, byte(len(text)))
	b = append(b, text...)
	_, err := w.Write(b)
	return err
}

func readChallenge(r io.Reader) (c challenge, err error) {
	var head [7]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return c, fmt.Errorf("transport: reading handshake reply: %w", err)
	}
	if [4]byte(head[:4]) != handshakeMagic {
		return c, fmt.Errorf("transport: bad handshake magic %q in reply", head[:4])
	}
	text := make([]byte, head[6])
	if _, err := io.ReadFull(r, text); err != nil {
		return c, fmt.Errorf("transport: reading handshake reply: %w", noEOF(err))
	}
	if head[5] != statusOK {
		return c, fmt.Errorf("transport: peer refused handshake: %s", text)
	}
	if head[4] != protocolVersion {
		return c, fmt.Errorf("transport: peer speaks protocol version %d, want %d", head[4], protocolVersion)
	}
	if len(text) == 0 {
		return c, errors.New("transport: empty node id in handshake reply")
	}
	c.nodeID = string(text)
	var flags [1]byte
	if _, err := io.ReadFull(r, flags[:]); err != nil {
		return c, fmt.Errorf("transport: reading handshake reply: %w", noEOF(err))
	}
	c.flags = flags[0]
	if _, err := io.ReadFull(r, c.nonce[:]); err != nil {
		return c, fmt.Errorf("transport: reading handshake reply: %w", noEOF(err))
	}
	if c.flags&flagSecret != 0 {
		if _, err := io.ReadFull(r, c.mac[:]); err != nil {
			return c, fmt.Errorf("transport: reading handshake reply: %w", noEOF(err))
		}
	}
	return c, nil
}

// writeVerdict ends the handshake: empty on success, the reason otherwise.
func writeVerdict(w io.Writer, herr error) error {
	status, text := statusOK, ""
	if herr != nil {
		status, text = statusErr, truncate(herr.Error(), 255)
	}
	b := append([]byte{status, byte(len(text))}, text...)
	_, err := w.Write(b)
	return err
}

func readVerdict(r io.Reader) error {
	var head [2]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return fmt.Errorf("transport: reading handshake verdict: %w", noEOF(err))
	}
	text := make([]byte, head[1])
	if _, err := io.ReadFull(r, text); err != nil {
		return fmt.Errorf("transport: reading handshake verdict: %w", noEOF(err))
	}
	if head[0] != statusOK {
		return fmt.Errorf("transport: peer refused handshake: %s", text)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func newNonce() (n [nonceLen]byte, err error) {
	_, err = rand.Read(n[:])
	return n, err
}

// proof computes one side's HMAC over everything both sides agreed on.
func proof(secret []byte, label string, kind byte, dialerID, acceptorID string, dialerNonce, acceptorNonce [nonceLen]byte, binding []byte) [macLen]byte {
	m := hmac.New(sha256.New, secret)
	field := func(b []byte) {
		var l [2]byte
		l[0], l[1] = byte(len(b)>>8), byte(len(b))
		m.Write(l[:])
		m.Write(b)
	}
	field([]byte(label))
	field([]byte{kind})
	field([]byte(dialerID))
	field([]byte(acceptorID))
	field(dialerNonce[:])
	field(acceptorNonce[:])
	field(binding)
	var out [macLen]byte
	copy(out[:], m.Sum(nil))
	return out
}

// channelBinding returns keying material of nc's TLS session, so a proof
// made on one TLS session is worthless on another. Plain TCP has none.
func channelBinding(nc net.Conn) ([]byte, error) {
	tc, ok := nc.(*tls.Conn)
	if !ok {
		return nil, nil
	}
	st := tc.ConnectionState()
	b, err := st.ExportKeyingMaterial(labelTLS, nil, 32)
	if err != nil {
		return nil, fmt.Errorf("transport: TLS channel binding: %w", err)
	}
	return b, nil
}

// peerCertificate returns the verified leaf certificate the other end of a
// TLS connection presented, or nil (plain TCP, or TLS without a client
// certificate).
func peerCertificate(nc net.Conn) *x509.Certificate {
	tc, ok := nc.(*tls.Conn)
	if !ok {
		return nil
	}
	st := tc.ConnectionState()
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return nil
	}
	return st.PeerCertificates[0]
}

// certNames reports whether cert names node id: a DNS SAN equal to it, a
// URI SAN whose last path segment (or opaque part) is it (e.g.
// spiffe://cluster/herald/n1), or a common name equal to it. A certificate for n3 therefore cannot
// speak as n1 even though the same CA signed both.
func certNames(cert *x509.Certificate, id string) bool {
	for _, d := range cert.DNSNames {
		if d == id {
			return true
		}
	}
	for _, u := range cert.URIs {
		if uriNames(u, id) {
			return true
		}
	}
	return cert.Subject.CommonName == id
}

func uriNames(u *url.URL, id string) bool {
	if u.Opaque != "" {
		parts := strings.Split(u.Opaque, ":")
		return parts[len(parts)-1] == id
	}
	p := strings.TrimSuffix(u.Path, "/")
	if p == "" {
		return u.Host == id
	}
	return path.Base(p) == id
}

// certIdentities lists the names a certificate offers, for error messages.
func certIdentities(cert *x509.Certificate) string {
	var names []string
	if cert.Subject.CommonName != "" {
		names = append(names, "CN="+cert.Subject.CommonName)
	}
	names = append(names, cert.DNSNames...)
	for _, u := range cert.URIs {
		names = append(names, u.String())
	}
	if len(names) == 0 {
		return "no names"
	}
	return strings.Join(names, ", ")
}
