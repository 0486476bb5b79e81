package auth

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ErrUnauthorized is wrapped by every refusal of Token and User.
var ErrUnauthorized = errors.New("unauthorized")

// maxTokenBytes bounds what is decoded before the signature is checked, so
// an unauthenticated client cannot make the server parse megabytes of JSON.
const maxTokenBytes = 256 << 10

// Config says which tokens a Verifier accepts. It needs at least one of
// HMACSecret and PublicKeys, or Insecure.
type Config struct {
	// HMACSecret verifies HS256, HS384 and HS512 tokens. At least 32 bytes.
	HMACSecret []byte
	// PublicKeys verify RS256/384/512 and PS256/384/512 tokens
	// (*rsa.PublicKey, at least 2048 bits) and EdDSA tokens
	// (ed25519.PublicKey). A token is accepted if any key of its algorithm's
	// family verifies it, so keys can be rotated by listing old and new.
	PublicKeys []crypto.PublicKey
	// Issuer, if set, must equal the token's "iss".
	Issuer string
	// Audience, if set, must be among the token's "aud".
	Audience string
	// RequireExpiry refuses tokens without "exp", which would otherwise be
	// valid forever.
	RequireExpiry bool
	// Leeway is the clock skew allowed between the issuer and this node
	// when checking "exp", "nbf" and "iat". A token is valid until its exp
	// plus Leeway, at auth and on every later request alike.
	Leeway time.Duration
	// Insecure accepts a bare user name without a token and grants it every
	// action on every room. Local development only.
	Insecure bool
}

// Validate reports every problem with the configuration at once, so an
// operator fixes them in one round.
func (c Config) Validate() error {
	var errs []error
	if !c.Insecure && len(c.HMACSecret) == 0 && len(c.PublicKeys) == 0 {
		errs = append(errs, errors.New("auth: no HMAC secret or public key to verify tokens with, and insecure mode is off"))
	}
	if n := len(c.HMACSecret); n > 0 && n < minHMACSecretLen {
		errs = append(errs, fmt.Errorf("auth: HMAC secret is %d bytes; at least %d required", n, minHMACSecretLen))
	}
	for i, key := range c.PublicKeys {
		if err := checkPublicKey(key); err != nil {
			errs = append(errs, fmt.Errorf("auth: PublicKeys[%d]: %w", i, err))
		}
	}
	if c.Leeway < 0 {
		errs = append(errs, fmt.Errorf("auth: Leeway %v is negative", c.Leeway))
	}
	return errors.Join(errs...)
}

// Verifier checks credentials against a Config. It is safe for concurrent
// use.
type Verifier struct {
	insecure    bool
	hmacSecret  []byte
	rsaKeys     jwt.VerificationKeySet
	ed25519Keys jwt.VerificationKeySet
	// methods lists the accepted "alg" values: those of the families that
	// have a key, so a token cannot choose to be checked as HMAC with a
	// public key's bytes for a secret.
	methods []string
	options []jwt.ParserOption
	leeway  time.Duration
}

var (
	hmacMethods    = []string{"HS256", "HS384", "HS512"}
	rsaMethods     = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	ed25519Methods = []string{"EdDSA"}
)

// New returns a Verifier for a valid cfg. It keeps its own copy of the
// secret and key list.
func New(cfg Config) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	v := &Verifier{insecure: cfg.Insecure, leeway: cfg.Leeway}
	if len(cfg.HMACSecret) > 0 {
		v.hmacSecret = bytes.Clone(cfg.HMACSecret)
		v.methods = append(v.methods, hmacMethods...)
	}
	for _, key := range cfg.PublicKeys {
		switch key.(type) {
		case *rsa.PublicKey:
			v.rsaKeys.Keys = append(v.rsaKeys.Keys, key)
		case ed25519.PublicKey:
			v.ed25519Keys.Keys = append(v.ed25519Keys.Keys, key)
		}
	}
	if len(v.rsaKeys.Keys) > 0 {
		v.methods = append(v.methods, rsaMethods...)
	}
	if len(v.ed25519Keys.Keys) > 0 {
		v.methods = append(v.methods, ed25519Methods...)
	}
	v.options = []jwt.ParserOption{
		jwt.WithValidMethods(v.methods),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithIssuedAt(),
		// Canonical base64 only, so one token has one encoding.
		jwt.WithStrictDecoding(),
	}
	if cfg.Issuer != "" {
		v.options = append(v.options, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		v.options = append(v.options, jwt.WithAudience(cfg.Audience))
	}
	if cfg.RequireExpiry {
		v.options = append(v.options, jwt.WithExpirationRequired())
	}
	return v, nil
}

// Insecure reports whether bare user names are accepted.
func (v *Verifier) Insecure() bool { return v.insecure }

// Token verifies a JWT and returns the identity it names. Errors wrap
// ErrUnauthorized and say what is wrong without echoing the token. They also
// wrap the github.com/golang-jwt/jwt/v5 error behind them where there is
// one, so a caller can tell an expired token (jwt.ErrTokenExpired), which
// the client should refresh, from a forged one.
func (v *Verifier) Token(token string) (*Identity, error) {
	switch {
	case len(v.methods) == 0:
		return nil, fmt.Errorf("%w: no keys are configured to verify tokens with; send a user name", ErrUnauthorized)
	case token == "":
		return nil, fmt.Errorf("%w: empty token", ErrUnauthorized)
	case len(token) > maxTokenBytes:
		return nil, fmt.Errorf("%w: token is %d bytes, limit %d", ErrUnauthorized, len(token), maxTokenBytes)
	}
	claims := jwt.MapClaims{}
	parsed, err := jwt.NewParser(v.options...).ParseWithClaims(token, claims, v.verificationKeys)
	if err != nil {
		if parsed != nil && parsed.Method != nil && !slices.Contains(v.methods, parsed.Method.Alg()) {
			return nil, fmt.Errorf("%w: token algorithm %q is not accepted here (accepted: %s)",
				ErrUnauthorized, parsed.Method.Alg(), strings.Join(v.methods, ", "))
		}
		return nil, fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	id := &Identity{leeway: v.leeway}
	if id.User, err = subject(claims); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	exp, err := claims.GetExpirationTime()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	if exp != nil {
		id.Expires = exp.Time
	}
	if id.grants, err = parseGrants(claims["herald"]); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	return id, nil
}

// verificationKeys is the jwt key function. WithValidMethods has already
// limited the algorithm to a family that has keys; the checks here keep
// that true even if the two ever disagree.
func (v *Verifier) verificationKeys(t *jwt.Token) (any, error) {
	switch t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		if len(v.hmacSecret) > 0 {
			return v.hmacSecret, nil
		}
	case *jwt.SigningMethodRSA, *jwt.SigningMethodRSAPSS:
		if len(v.rsaKeys.Keys) > 0 {
			return v.rsaKeys, nil
		}
	case *jwt.SigningMethodEd25519:
		if len(v.ed25519Keys.Keys) > 0 {
			return v.ed25519Keys, nil
		}
	}
	return nil, errors.New("no key for this algorithm")
}

func subject(claims jwt.MapClaims) (string, error) {
	raw := claims["sub"]
	if raw == nil {
		return "", errors.New("token has no sub claim")
	}
	sub, ok := raw.(string)
	if !ok {
		return "", fmt.Errorf("sub claim must be a string, not %s", jsonType(raw))
	}
	if err := checkUser("sub claim", sub); err != nil {
		return "", err
	}
	return sub, nil
}

// User returns an identity that may do everything, for a bare user name.
// Only insecure mode accepts it.
func (v *Verifier) User(name string) (*Identity, error) {
	if !v.insecure {
		return nil, fmt.Errorf("%w: insecure auth is off; send a token", ErrUnauthorized)
	}
	if err := checkUser("user name", name); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnauthorized, err)
	}
	return &Identity{User: name, grants: everyRoom()}, nil
}
