package auth

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

const (
	minRSABits       = 2048
	minHMACSecretLen = 32
)

// LoadPublicKeys parses PEM data holding one or more "PUBLIC KEY" (PKIX: RSA
// or Ed25519), "RSA PUBLIC KEY" (PKCS #1) or "CERTIFICATE" blocks. A
// certificate only carries its key here: its validity dates and chain are
// not checked, because a token is trusted for the key that signed it, not
// for a certificate. Text outside the blocks is ignored, as PEM bundles
// often carry comments. Errors name the block, counting from 1.
func LoadPublicKeys(pemData []byte) ([]crypto.PublicKey, error) {
	var keys []crypto.PublicKey
	rest := pemData
	for n := 1; ; n++ {
		start := bytes.Index(rest, pemBegin)
		if start < 0 {
			break
		}
		rest = rest[start:]
		// pem.Decode skips a damaged block in silence and returns the next
		// one, so it is given one block's text at a time.
		end := bytes.Index(rest, pemEnd)
		if end < 0 {
			return nil, fmt.Errorf("auth: PEM block %d has no END line", n)
		}
		next := len(rest)
		if i := bytes.IndexByte(rest[end:], '\n'); i >= 0 {
			next = end + i + 1
		}
		text := rest[:next]
		rest = rest[next:]
		block, _ := pem.Decode(text)
		if block == nil || bytes.Contains(text[len(pemBegin):], pemBegin) {
			return nil, fmt.Errorf("auth: PEM block %d is damaged: bad base64, or BEGIN and END lines that do not pair", n)
		}
		key, err := parsePEMBlock(block)
		if err != nil {
			return nil, fmt.Errorf("auth: PEM block %d (%s): %w", n, block.Type, err)
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, errors.New("auth: no PEM blocks found")
	}
	return keys, nil
}

var (
	pemBegin = []byte("-----BEGIN ")
	pemEnd   = []byte("-----END ")
)

func parsePEMBlock(block *pem.Block) (crypto.PublicKey, error) {
	var key crypto.PublicKey
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	default:
		if strings.Contains(block.Type, "PRIVATE KEY") {
			return nil, errors.New("a private key does not belong here; give its public key")
		}
		return nil, errors.New(`want "PUBLIC KEY", "RSA PUBLIC KEY" or "CERTIFICATE"`)
	}
	if err != nil {
		return nil, err
	}
	if err := checkPublicKey(key); err != nil {
		return nil, err
	}
	return key, nil
}

// checkPublicKey accepts the key types the verifier can use, at a strength
// worth trusting.
func checkPublicKey(key crypto.PublicKey) error {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return errors.New("empty RSA key")
		}
		if bits := k.N.BitLen(); bits < minRSABits {
			return fmt.Errorf("RSA key is %d bits; at least %d required", bits, minRSABits)
		}
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("key is %d bytes; an Ed25519 key has %d", len(k), ed25519.PublicKeySize)
		}
	case nil:
		return errors.New("nil key")
	default:
		return fmt.Errorf("unsupported key type %T; want *rsa.PublicKey or ed25519.PublicKey", key)
	}
	return nil
}
