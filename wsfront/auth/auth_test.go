package auth_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	mathrand "math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldhq/herald/wsfront/auth"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

// RSA key generation is slow, the race detector more so: each key is made
// once per test binary.
var (
	rsaKey      = sync.OnceValue(func() *rsa.PrivateKey { return newRSAKey(2048) })
	otherRSAKey = sync.OnceValue(func() *rsa.PrivateKey { return newRSAKey(2048) })
)

func newRSAKey(bits int) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		panic(err)
	}
	return k
}

func newEd25519Key(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func newVerifier(t testing.TB, cfg auth.Config) *auth.Verifier {
	t.Helper()
	v, err := auth.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return v
}

func sign(t testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", method.Alg(), err)
	}
	return s
}

// signRaw makes an HS256 token around payload exactly as given, so tests
// can send claims that encoding/json would never produce.
func signRaw(payload, key []byte) string {
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(payload)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(mac.Sum(nil))
}

func hs256(t testing.TB, claims jwt.MapClaims) string {
	return sign(t, jwt.SigningMethodHS256, secret, claims)
}

func lobbyClaims() jwt.MapClaims {
	return jwt.MapClaims{
		"sub":    "alice",
		"exp":    time.Now().Add(time.Hour).Unix(),
		"herald": map[string]any{"join": []string{"lobby"}},
	}
}

func accept(t *testing.T, v *auth.Verifier, token string) *auth.Identity {
	t.Helper()
	id, err := v.Token(token)
	if err != nil {
		t.Fatalf("token refused: %v", err)
	}
	return id
}

// refuse checks that token is refused with an error that wraps
// ErrUnauthorized, contains every one of want and does not echo the token.
func refuse(t *testing.T, v *auth.Verifier, token string, want ...string) error {
	t.Helper()
	id, err := v.Token(token)
	if err == nil {
		t.Fatalf("token accepted as %q, want refusal", id.User)
	}
	if !errors.Is(err, auth.ErrUnauthorized) {
		t.Errorf("error does not wrap ErrUnauthorized: %v", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	if token != "" && strings.Contains(err.Error(), token) {
		t.Errorf("error echoes the token: %v", err)
	}
	if parts := strings.Split(token, "."); len(parts) == 3 && len(parts[2]) > 8 && strings.Contains(err.Error(), parts[2]) {
		t.Errorf("error echoes the signature: %v", err)
	}
	return err
}

func TestTokenAcceptedForEveryKeyType(t *testing.T) {
	edPub, edPriv := newEd25519Key(t)
	v := newVerifier(t, auth.Config{
		HMACSecret: secret,
		PublicKeys: []crypto.PublicKey{&rsaKey().PublicKey, edPub},
	})
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	for _, tc := range []struct {
		method jwt.SigningMethod
		key    any
	}{
		{jwt.SigningMethodHS256, secret},
		{jwt.SigningMethodHS384, secret},
		{jwt.SigningMethodHS512, secret},
		{jwt.SigningMethodRS256, rsaKey()},
		{jwt.SigningMethodRS512, rsaKey()},
		{jwt.SigningMethodPS256, rsaKey()},
		{jwt.SigningMethodEdDSA, edPriv},
	} {
		t.Run(tc.method.Alg(), func(t *testing.T) {
			claims := lobbyClaims()
			claims["exp"] = exp.Unix()
			id := accept(t, v, sign(t, tc.method, tc.key, claims))
			if id.User != "alice" {
				t.Errorf("User = %q, want alice", id.User)
			}
			if !id.Expires.Equal(exp) {
				t.Errorf("Expires = %v, want %v", id.Expires, exp)
			}
			if !id.Can(auth.Join, "lobby") || id.Can(auth.Publish, "lobby") {
				t.Errorf("grants do not follow the herald claim")
			}
		})
	}
}

func TestTokenWithWrongKeyRefused(t *testing.T) {
	edPub, _ := newEd25519Key(t)
	_, otherEdPriv := newEd25519Key(t)
	v := newVerifier(t, auth.Config{
		HMACSecret: secret,
		PublicKeys: []crypto.PublicKey{&rsaKey().PublicKey, edPub},
	})
	otherSecret := []byte("another secret of thirty-two by.")
	for _, tc := range []struct {
		name   string
		method jwt.SigningMethod
		key    any
	}{
		{"hmac", jwt.SigningMethodHS256, otherSecret},
		{"rsa", jwt.SigningMethodRS256, otherRSAKey()},
		{"rsa-pss", jwt.SigningMethodPS256, otherRSAKey()},
		{"ed25519", jwt.SigningMethodEdDSA, otherEdPriv},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refuse(t, v, sign(t, tc.method, tc.key, lobbyClaims()), "signature is invalid")
		})
	}
}

func TestTokenAcceptedByAnyKeyOfItsFamily(t *testing.T) {
	edPub, edPriv := newEd25519Key(t)
	otherEdPub, _ := newEd25519Key(t)
	v := newVerifier(t, auth.Config{PublicKeys: []crypto.PublicKey{
		&otherRSAKey().PublicKey, otherEdPub, &rsaKey().PublicKey, edPub,
	}})
	accept(t, v, sign(t, jwt.SigningMethodRS256, rsaKey(), lobbyClaims()))
	accept(t, v, sign(t, jwt.SigningMethodRS256, otherRSAKey(), lobbyClaims()))
	accept(t, v, sign(t, jwt.SigningMethodEdDSA, edPriv, lobbyClaims()))
}

func TestTokenTamperedPayloadRefused(t *testing.T) {
	v := newVerifier(t, auth.Config{HMACSecret: secret})
	parts := strings.Split(hs256(t, lobbyClaims()), ".")
	forged := lobbyClaims()
	forged["sub"] = "mallory"
	forgedParts := strings.Split(hs256(t, forged), ".")
	refuse(t, v, parts[0]+"."+forgedParts[1]+"."+parts[2], "signature is invalid")
}

func TestAlgNoneRefused(t *testing.T) {
	edPub, _ := newEd25519Key(t)
	v := newVerifier(t, auth.Config{
		HMACSecret: secret,
		PublicKeys: []crypto.PublicKey{&rsaKey().PublicKey, edPub},
	})
	token := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, lobbyClaims())
	refuse(t, v, token, `"none" is not accepted`)
	// The same with a signature segment that is not empty.
	refuse(t, v, token+"c2ln", `"none" is not accepted`)
}

func TestAlgorithmOfUnconfiguredFamilyRefused(t *testing.T) {
	_, edPriv := newEd25519Key(t)
	rsaOnly := newVerifier(t, auth.Config{PublicKeys: []crypto.PublicKey{&rsaKey().PublicKey}})
	refuse(t, rsaOnly, sign(t, jwt.SigningMethodEdDSA, edPriv, lobbyClaims()), `"EdDSA" is not accepted`)
	refuse(t, rsaOnly, hs256(t, lobbyClaims()), `"HS256" is not accepted`, "RS256")

	hmacOnly := newVerifier(t, auth.Config{HMACSecret: secret})
	refuse(t, hmacOnly, sign(t, jwt.SigningMethodRS256, rsaKey(), lobbyClaims()), `"RS256" is not accepted`)
}

func TestUnknownAlgorithmRefused(t *testing.T) {
	v := newVerifier(t, auth.Config{HMACSecret: secret})
	enc := base64.RawURLEncoding
	token := enc.EncodeToString([]byte(`{"alg":"XX999"}`)) + "." +
		enc.EncodeToString([]byte(`{"sub":"alice"}`)) + "." + enc.EncodeToString([]byte("signature"))
	err := refuse(t, v, token, "unverifiable")
	if strings.Contains(err.Error(), "XX999") {
		t.Errorf("error echoes the token's alg: %v", err)
	}
}

// A verifier holding an RSA public key must not accept an HMAC token whose
// secret is that public key, which anybody can have.
func TestAlgorithmConfusionRefused(t *testing.T) {
	der, err := x509.MarshalPKIXPublicKey(&rsaKey().PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	pkcs1 := x509.MarshalPKCS1PublicKey(&rsaKey().PublicKey)

	rsaOnly := newVerifier(t, auth.Config{PublicKeys: []crypto.PublicKey{&rsaKey().PublicKey}})
	both := newVerifier(t, auth.Config{HMACSecret: secret, PublicKeys: []crypto.PublicKey{&rsaKey().PublicKey}})
	for name, fakeSecret := range map[string][]byte{"der": der, "pem": pemBytes, "pkcs1": pkcs1} {
		t.Run(name, func(t *testing.T) {
			for _, m := range []jwt.SigningMethod{jwt.SigningMethodHS256, jwt.SigningMethodHS512} {
				token := sign(t, m, fakeSecret, lobbyClaims())
				refuse(t, rsaOnly, token, "is not accepted")
				refuse(t, both, token, "signature is invalid")
			}
		})
	}
}

func TestTimeClaims(t *testing.T) {
	now := time.Now()
	strict := newVerifier(t, auth.Config{HMACSecret: secret})
	lenient := newVerifier(t, auth.Config{HMACSecret: secret, Leeway: time.Minute})
	claims := func(key string, at time.Duration) jwt.MapClaims {
		c := lobbyClaims()
		c[key] = now.Add(at).Unix()
		return c
	}

	err := refuse(t, strict, hs256(t, claims("exp", -time.Hour)), "expired")
	if !errors.Is(err, jwt.ErrTokenExpired) {
		t.Errorf("expiry error does not wrap jwt.ErrTokenExpired: %v", err)
	}
	refuse(t, strict, hs256(t, claims("exp", -10*time.Second)), "expired")
	// A token accepted thanks to the leeway stays valid for the leeway,
	// so that auth and the requests after it agree.
	id := accept(t, lenient, hs256(t, claims("exp", -10*time.Second)))
	exp := id.Expires
	if id.Expired(now) || id.Expired(exp.Add(time.Minute-time.Nanosecond)) {
		t.Errorf("a token accepted thanks to the leeway is Expired within it")
	}
	if !id.Expired(exp.Add(time.Minute)) {
		t.Errorf("a token is not Expired at exp + leeway")
	}
	refuse(t, lenient, hs256(t, claims("exp", -2*time.Minute)), "expired")

	refuse(t, strict, hs256(t, claims("nbf", time.Hour)), "not valid yet")
	refuse(t, strict, hs256(t, claims("nbf", 10*time.Second)), "not valid yet")
	accept(t, lenient, hs256(t, claims("nbf", 10*time.Second)))
	accept(t, strict, hs256(t, claims("nbf", -time.Second)))

	refuse(t, strict, hs256(t, claims("iat", time.Hour)), "before issued")
	accept(t, lenient, hs256(t, claims("iat", 10*time.Second)))

	refuse(t, strict, hs256(t, jwt.MapClaims{"sub": "alice", "exp": "tomorrow"}), "exp is invalid")
}

func TestIssuerAndAudience(t *testing.T) {
	v := newVerifier(t, auth.Config{HMACSecret: secret, Issuer: "https://id.example", Audience: "herald"})
	claims := func(iss string, aud any) jwt.MapClaims {
		c := lobbyClaims()
		if iss != "" {
			c["iss"] = iss
		}
		if aud != nil {
			c["aud"] = aud
		}
		return c
	}
	accept(t, v, hs256(t, claims("https://id.example", "herald")))
	accept(t, v, hs256(t, claims("https://id.example", []string{"billing", "herald"})))
	refuse(t, v, hs256(t, claims("https://evil.example", "herald")), "invalid issuer")
	refuse(t, v, hs256(t, claims("", "herald")), "iss claim is required")
	refuse(t, v, hs256(t, claims("https://id.example", "billing")), "invalid audience")
	refuse(t, v, hs256(t, claims("https://id.example", []string{"billing", "chat"})), "invalid audience")
	refuse(t, v, hs256(t, claims("https://id.example", nil)), "aud claim is required")

	// Unconfigured, neither is looked at.
	open := newVerifier(t, auth.Config{HMACSecret: secret})
	accept(t, open, hs256(t, claims("https://anyone.example", "anything")))
}

func TestRequireExpiry(t *testing.T) {
	noExp := lobbyClaims()
	delete(noExp, "exp")

	required := newVerifier(t, auth.Config{HMACSecret: secret, RequireExpiry: true})
	refuse(t, required, hs256(t, noExp), "exp claim is required")
	accept(t, required, hs256(t, lobbyClaims()))

	optional := newVerifier(t, auth.Config{HMACSecret: secret})
	id := accept(t, optional, hs256(t, noExp))
	if !id.Expires.IsZero() {
		t.Errorf("Expires = %v for a token without exp, want zero", id.Expires)
	}
	if id.Expired(time.Now().Add(100 * 365 * 24 * time.Hour)) {
		t.Errorf("a token without exp expires")
	}
}

func TestSubject(t *testing.T) {
	v := newVerifier(t, auth.Config{HMACSecret: secret})
	withSub := func(sub any) string {
		c := lobbyClaims()
		c["sub"] = sub
		return hs256(t, c)
	}
	noSub := lobbyClaims()
	delete(noSub, "sub")

	refuse(t, v, hs256(t, noSub), "no sub claim")
	refuse(t, v, withSub(nil), "no sub claim")
	refuse(t, v, withSub(""), "sub claim is empty")
	refuse(t, v, withSub(strings.Repeat("a", 257)), "sub claim is 257 bytes, limit 256")
	refuse(t, v, withSub(42), "sub claim must be a string, not a number")
	refuse(t, v, withSub([]string{"alice"}), "sub claim must be a string, not a list")
	refuse(t, v, withSub("ali\nce"), "control character")
	refuse(t, v, withSub("ali\u0085ce"), "control character")

	long := strings.Repeat("é", 128)
	if id := accept(t, v, withSub(long)); id.User != long {
		t.Errorf("User = %q, want %q", id.User, long)
	}
	if id := accept(t, v, withSub("Zoë 🦊")); id.User != "Zoë 🦊" {
		t.Errorf("User = %q", id.User)
	}
}

func TestMalformedTokenRefused(t *testing.T) {
	v := newVerifier(t, auth.Config{HMACSecret: secret})
	good := hs256(t, lobbyClaims())
	parts := strings.Split(good, ".")
	refuse(t, v, "", "empty token")
	refuse(t, v, "not-a-token", "malformed")
	refuse(t, v, parts[0]+"."+parts[1], "malformed")
	refuse(t, v, good+".extra", "malformed")
	refuse(t, v, "!!!."+parts[1]+"."+parts[2], "malformed")
	refuse(t, v, parts[0]+"."+parts[1]+"=."+parts[2], "malformed")
	refuse(t, v, signRaw([]byte(`["sub","alice"]`), secret), "malformed")
	refuse(t, v, signRaw([]byte(`{"sub":"alice"`), secret), "malformed")
	refuse(t, v, strings.Repeat("a", 300<<10), "limit")
}

func TestMalformedHeraldClaimRefused(t *testing.T) {
	v := newVerifier(t, auth.Config{HMACSecret: secret})
	many := make([]string, 1001)
	for i := range many {
		many[i] = fmt.Sprint("room-", i)
	}
	for _, tc := range []struct {
		name   string
		herald any
		want   string
	}{
		{"string", "lobby", "herald claim must be an object, not a string"},
		{"list", []string{"lobby"}, "herald claim must be an object, not a list"},
		{"number", 7, "herald claim must be an object, not a number"},
		{"action not a list", map[string]any{"join": "lobby"}, "herald.join must be a list of strings, not a string"},
		{"action an object", map[string]any{"read": map[string]any{"lobby": true}}, "herald.read must be a list of strings, not an object"},
		{"pattern not a string", map[string]any{"publish": []any{"lobby", 7}}, "herald.publish[1] must be a string, not a number"},
		{"null pattern", map[string]any{"join": []any{nil}}, "herald.join[0] must be a string, not null"},
		{"star in the middle", map[string]any{"join": []string{"lobby", "team-*-red"}}, `herald.join[1]: "*" may only end a room pattern`},
		{"star at the start", map[string]any{"read": []string{"*-red"}}, `herald.read[0]: "*" may only end`},
		{"two stars", map[string]any{"rooms": []string{"**"}}, `herald.rooms[0]: "*" may only end`},
		{"empty pattern", map[string]any{"join": []string{""}}, "herald.join[0]: empty room pattern"},
		{"long pattern", map[string]any{"join": []string{strings.Repeat("r", 1025)}}, "herald.join[0]: room pattern is 1025 bytes, limit 1024"},
		{"too many patterns", map[string]any{"join": many}, "more than 1000 room patterns"},
		{"too many in all", map[string]any{"join": many[:600], "read": many[:600]}, "more than 1000 room patterns"},
		{"unknown key", map[string]any{"join": []string{"lobby"}, "pubish": []string{"lobby"}}, `unknown key "pubish"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := lobbyClaims()
			c["herald"] = tc.herald
			refuse(t, v, hs256(t, c), tc.want)
		})
	}

	// The limits themselves are allowed.
	c := lobbyClaims()
	c["herald"] = map[string]any{"join": many[:999], "read": []string{strings.Repeat("r", 1024)}}
	accept(t, v, hs256(t, c))
}

func TestPatternMatching(t *testing.T) {
	v := newVerifier(t, auth.Config{HMACSecret: secret})
	c := lobbyClaims()
	c["herald"] = map[string]any{
		"join":    []string{"lobby", "team-*", "team-red-*", "t", "x*", "lobby"},
		"publish": []string{"lobby", "a-*", "a.*", "ab*", "abc*"},
		"read":    []string{"*", "ignored-*"},
	}
	id := accept(t, v, hs256(t, c))

	none := lobbyClaims()
	none["herald"] = map[string]any{"join": []string{}, "publish": nil}
	emptyLists := accept(t, v, hs256(t, none))
	delete(none, "herald")
	noClaim := accept(t, v, hs256(t, none))

	for _, tc := range []struct {
		id   *auth.Identity
		a    auth.Action
		room string
		want bool
	}{
		{id, auth.Join, "lobby", true},
		{id, auth.Join, "lobby2", false},
		{id, auth.Join, "lobb", false},
		{id, auth.Join, "Lobby", false},
		{id, auth.Join, "team-", true},
		{id, auth.Join, "team-blue", true},
		{id, auth.Join, "team-red-1", true},
		{id, auth.Join, "team", false},
		{id, auth.Join, "teams", false},
		{id, auth.Join, "t", true},
		{id, auth.Join, "ta", false},
		{id, auth.Join, "x", true},
		{id, auth.Join, "xylophone", true},
		{id, auth.Join, "w", false},
		{id, auth.Join, "", false},
		{id, auth.Publish, "lobby", true},
		{id, auth.Publish, "team-blue", false},
		{id, auth.Publish, "a-1", true},
		{id, auth.Publish, "a.1", true},
		{id, auth.Publish, "a,1", false},
		{id, auth.Publish, "a/1", false},
		{id, auth.Publish, "abcd", true},
		{id, auth.Publish, "ab", true},
		{id, auth.Publish, "a", false},
		{id, auth.Read, "anything", true},
		{id, auth.Read, "", true},
		{id, auth.Action(0), "lobby", false},
		{id, auth.Action(4), "lobby", false},
		{emptyLists, auth.Join, "lobby", false},
		{emptyLists, auth.Publish, "lobby", false},
		{emptyLists, auth.Read, "lobby", false},
		{noClaim, auth.Read, "lobby", false},
		{nil, auth.Read, "lobby", false},
	} {
		if got := tc.id.Can(tc.a, tc.room); got != tc.want {
			user := "<nil>"
			if tc.id != nil {
				user = tc.id.User
			}
			t.Errorf("%s Can(%s, %q) = %v, want %v", user, tc.a, tc.room, got, tc.want)
		}
	}
}

func TestRoomsGrantsEveryAction(t *testing.T) {
	v := newVerifier(t, auth.Config{HMACSecret: secret})
	c := lobbyClaims()
	c["herald"] = map[string]any{"rooms": []string{"shared-*"}, "read": []string{"news"}}
	id := accept(t, v, hs256(t, c))
	for _, a := range []auth.Action{auth.Join, auth.Publish, auth.Read} {
		if !id.Can(a, "shared-1") {
			t.Errorf("rooms pattern does not grant %s", a)
		}
	}
	if !id.Can(auth.Read, "news") || id.Can(auth.Join, "news") {
		t.Errorf("specific list not merged with rooms")
	}
}

// Can agrees with the plain definition of a pattern on random patterns and
// rooms from a small alphabet, where prefixes overlap often.
func TestPatternMatchingAgreesWithDefinition(t *testing.T) {
	v := newVerifier(t, auth.Config{HMACSecret: secret})
	r := mathrand.New(mathrand.NewPCG(1, 2))
	word := func() string {
		b := make([]byte, r.IntN(4))
		for i := range b {
			b[i] = "ab-"[r.IntN(3)]
		}
		return string(b)
	}
	for range 300 {
		var patterns []string
		for range r.IntN(8) {
			p := word()
			if p == "" || r.IntN(2) == 0 {
				p += "*"
			}
			patterns = append(patterns, p)
		}
		c := lobbyClaims()
		c["herald"] = map[string]any{"join": patterns}
		id := accept(t, v, hs256(t, c))
		for range 30 {
			room := word()
			want := false
			for _, p := range patterns {
				if prefix, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(room, prefix) || p == room {
					want = true
				}
			}
			if got := id.Can(auth.Join, room); got != want {
				t.Fatalf("patterns %q: Can(join, %q) = %v, want %v", patterns, room, got, want)
			}
		}
	}
}

func TestInsecureMode(t *testing.T) {
	dev := newVerifier(t, auth.Config{Insecure: true})
	if !dev.Insecure() {
		t.Fatal("Insecure() = false with Insecure set")
	}
	id, err := dev.User("alice")
	if err != nil {
		t.Fatal(err)
	}
	if id.User != "alice" || !id.Expires.IsZero() || id.Expired(time.Now()) {
		t.Errorf("identity = %+v, want alice without expiry", id)
	}
	for _, a := range []auth.Action{auth.Join, auth.Publish, auth.Read} {
		for _, room := range []string{"lobby", "team-red", "x"} {
			if !id.Can(a, room) {
				t.Errorf("insecure identity cannot %s %q", a, room)
			}
		}
	}
	for name, want := range map[string]string{
		"":                       "user name is empty",
		strings.Repeat("u", 257): "user name is 257 bytes",
		"bad\xffname":            "not valid UTF-8",
		"tab\tname":              "control character",
	} {
		if _, err := dev.User(name); err == nil || !errors.Is(err, auth.ErrUnauthorized) || !strings.Contains(err.Error(), want) {
			t.Errorf("User(%q) error = %v, want one mentioning %q", name, err, want)
		}
	}
	// With no keys there is nothing to verify a token with.
	refuse(t, dev, hs256(t, lobbyClaims()), "no keys are configured")

	// Insecure mode with a key still verifies tokens, properly.
	mixed := newVerifier(t, auth.Config{Insecure: true, HMACSecret: secret})
	if id := accept(t, mixed, hs256(t, lobbyClaims())); id.Can(auth.Publish, "lobby") {
		t.Errorf("a token in insecure mode grants more than its claims")
	}
	refuse(t, mixed, sign(t, jwt.SigningMethodHS256, []byte("another secret of thirty-two by."), lobbyClaims()), "signature is invalid")

	prod := newVerifier(t, auth.Config{HMACSecret: secret})
	if prod.Insecure() {
		t.Fatal("Insecure() = true without Insecure set")
	}
	_, err = prod.User("alice")
	if !errors.Is(err, auth.ErrUnauthorized) || !strings.Contains(err.Error(), "insecure auth is off; send a token") {
		t.Errorf("User in secure mode: error = %v", err)
	}
}

func TestExpired(t *testing.T) {
	v := newVerifier(t, auth.Config{HMACSecret: secret})
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	c := lobbyClaims()
	c["exp"] = exp.Unix()
	id := accept(t, v, hs256(t, c))
	if id.Expired(exp.Add(-time.Second)) {
		t.Error("expired before exp")
	}
	if !id.Expired(exp) || !id.Expired(exp.Add(time.Second)) {
		t.Error("not expired at or after exp")
	}
	var nilID *auth.Identity
	if !nilID.Expired(time.Now()) {
		t.Error("a nil identity is not expired")
	}
}

func TestActionString(t *testing.T) {
	for a, want := range map[auth.Action]string{auth.Join: "join", auth.Publish: "publish", auth.Read: "read", 0: "Action(0)", 9: "Action(9)"} {
		if got := a.String(); got != want {
			t.Errorf("Action(%d).String() = %q, want %q", uint8(a), got, want)
		}
	}
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func pkixPEM(t *testing.T, key crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("PUBLIC KEY", der)
}

func selfSigned(t *testing.T, pub ed25519.PublicKey, priv ed25519.PrivateKey) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "herald token issuer"},
		NotBefore:    time.Now().Add(-48 * time.Hour),
		NotAfter:     time.Now().Add(-24 * time.Hour), // expired: only the key matters
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("CERTIFICATE", der)
}

func TestLoadPublicKeys(t *testing.T) {
	edPub, edPriv := newEd25519Key(t)
	certPub, certPriv := newEd25519Key(t)
	rsaPub := &rsaKey().PublicKey

	load := func(data []byte) []crypto.PublicKey {
		t.Helper()
		keys, err := auth.LoadPublicKeys(data)
		if err != nil {
			t.Fatalf("LoadPublicKeys: %v", err)
		}
		return keys
	}
	same := func(got crypto.PublicKey, want interface{ Equal(crypto.PublicKey) bool }) {
		t.Helper()
		if !want.Equal(got) {
			t.Errorf("loaded key %T differs from the one written", got)
		}
	}

	t.Run("pkix rsa", func(t *testing.T) {
		keys := load(pkixPEM(t, rsaPub))
		if len(keys) != 1 {
			t.Fatalf("got %d keys", len(keys))
		}
		same(keys[0], rsaPub)
	})
	t.Run("pkcs1 rsa", func(t *testing.T) {
		same(load(pemBlock("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(rsaPub)))[0], rsaPub)
	})
	t.Run("ed25519", func(t *testing.T) {
		same(load(pkixPEM(t, edPub))[0], edPub)
	})
	t.Run("certificate", func(t *testing.T) {
		same(load(selfSigned(t, certPub, certPriv))[0], certPub)
	})
	t.Run("bundle with comments", func(t *testing.T) {
		var b bytes.Buffer
		b.WriteString("# token signing keys, newest first\n")
		b.Write(pkixPEM(t, edPub))
		b.WriteString("\n# the old RSA key, until its tokens run out\n")
		b.Write(pemBlock("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(rsaPub)))
		b.Write(selfSigned(t, certPub, certPriv))
		keys := load(b.Bytes())
		if len(keys) != 3 {
			t.Fatalf("got %d keys, want 3", len(keys))
		}
		same(keys[0], edPub)
		same(keys[1], rsaPub)
		same(keys[2], certPub)

		v := newVerifier(t, auth.Config{PublicKeys: keys})
		accept(t, v, sign(t, jwt.SigningMethodEdDSA, edPriv, lobbyClaims()))
		accept(t, v, sign(t, jwt.SigningMethodRS256, rsaKey(), lobbyClaims()))
		accept(t, v, sign(t, jwt.SigningMethodEdDSA, certPriv, lobbyClaims()))
	})

	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	smallRSA := newRSAKey(1024)
	privDER, err := x509.MarshalPKCS8PrivateKey(edPriv)
	if err != nil {
		t.Fatal(err)
	}
	good := pkixPEM(t, edPub)
	damaged := []byte("-----BEGIN PUBLIC KEY-----\nthis is not base64!\n-----END PUBLIC KEY-----\n")
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "no PEM blocks found"},
		{"blank", []byte("\n\n  \n"), "no PEM blocks found"},
		{"garbage", []byte("this is not a key file\x00\xff"), "no PEM blocks found"},
		{"der without pem", x509.MarshalPKCS1PublicKey(rsaPub), "no PEM blocks found"},
		{"private key", pemBlock("PRIVATE KEY", privDER), "PEM block 1 (PRIVATE KEY): a private key does not belong here"},
		{"unknown block", append(good, pemBlock("EC PARAMETERS", []byte{1, 2})...), `PEM block 2 (EC PARAMETERS): want "PUBLIC KEY"`},
		{"ecdsa", append(good, pkixPEM(t, &ecKey.PublicKey)...), "PEM block 2 (PUBLIC KEY): unsupported key type *ecdsa.PublicKey"},
		{"small rsa", pkixPEM(t, &smallRSA.PublicKey), "PEM block 1 (PUBLIC KEY): RSA key is 1024 bits; at least 2048 required"},
		{"bad der", pemBlock("PUBLIC KEY", []byte("not der")), "PEM block 1 (PUBLIC KEY): "},
		{"bad certificate", append(good, pemBlock("CERTIFICATE", []byte("not der"))...), "PEM block 2 (CERTIFICATE): "},
		{"damaged between good", append(append(bytes.Clone(good), damaged...), good...), "PEM block 2 is damaged"},
		{"no end line", append(bytes.Clone(good), good[:len(good)/2]...), "PEM block 2 has no END line"},
		{"mismatched end", []byte(strings.Replace(string(good), "END PUBLIC KEY", "END CERTIFICATE", 1)), "PEM block 1 is damaged"},
		{"end of a later block", append(bytes.Clone(good[:len(good)/2]), good...), "PEM block 1 is damaged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, err := auth.LoadPublicKeys(tc.data)
			if err == nil {
				t.Fatalf("loaded %d keys, want an error", len(keys))
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	edPub, _ := newEd25519Key(t)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	smallRSA := newRSAKey(1024)
	for _, tc := range []struct {
		name string
		cfg  auth.Config
		want []string // empty: valid
	}{
		{"hmac", auth.Config{HMACSecret: secret}, nil},
		{"rsa", auth.Config{PublicKeys: []crypto.PublicKey{&rsaKey().PublicKey}}, nil},
		{"ed25519", auth.Config{PublicKeys: []crypto.PublicKey{edPub}}, nil},
		{"insecure only", auth.Config{Insecure: true}, nil},
		{"everything", auth.Config{HMACSecret: secret, PublicKeys: []crypto.PublicKey{&rsaKey().PublicKey, edPub}, Issuer: "i", Audience: "a", RequireExpiry: true, Leeway: time.Minute, Insecure: true}, nil},
		{"nothing", auth.Config{}, []string{"no HMAC secret or public key", "insecure mode is off"}},
		{"empty secret", auth.Config{HMACSecret: []byte{}}, []string{"no HMAC secret or public key"}},
		{"short secret", auth.Config{HMACSecret: secret[:31]}, []string{"HMAC secret is 31 bytes; at least 32 required"}},
		{"small rsa", auth.Config{PublicKeys: []crypto.PublicKey{edPub, &smallRSA.PublicKey}}, []string{"PublicKeys[1]: RSA key is 1024 bits; at least 2048 required"}},
		{"ecdsa", auth.Config{PublicKeys: []crypto.PublicKey{&ecKey.PublicKey}}, []string{"PublicKeys[0]: unsupported key type *ecdsa.PublicKey"}},
		{"rsa private key", auth.Config{PublicKeys: []crypto.PublicKey{rsaKey()}}, []string{"unsupported key type *rsa.PrivateKey"}},
		{"rsa by value", auth.Config{PublicKeys: []crypto.PublicKey{rsaKey().PublicKey}}, []string{"unsupported key type rsa.PublicKey"}},
		{"nil key", auth.Config{PublicKeys: []crypto.PublicKey{nil}}, []string{"PublicKeys[0]: nil key"}},
		{"nil rsa key", auth.Config{PublicKeys: []crypto.PublicKey{(*rsa.PublicKey)(nil)}}, []string{"PublicKeys[0]: empty RSA key"}},
		{"short ed25519", auth.Config{PublicKeys: []crypto.PublicKey{edPub[:31]}}, []string{"PublicKeys[0]: key is 31 bytes; an Ed25519 key has 32"}},
		{"negative leeway", auth.Config{HMACSecret: secret, Leeway: -time.Second}, []string{"Leeway -1s is negative"}},
		{"every problem at once", auth.Config{HMACSecret: secret[:8], PublicKeys: []crypto.PublicKey{&ecKey.PublicKey}, Leeway: -time.Second},
			[]string{"HMAC secret is 8 bytes", "PublicKeys[0]: unsupported", "Leeway"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			_, newErr := auth.New(tc.cfg)
			if len(tc.want) == 0 {
				if err != nil || newErr != nil {
					t.Fatalf("Validate = %v, New = %v; want valid", err, newErr)
				}
				return
			}
			if err == nil || newErr == nil {
				t.Fatalf("Validate = %v, New = %v; want errors", err, newErr)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// New copies the secret, so changing the caller's slice afterwards
// changes nothing.
func TestNewKeepsItsOwnSecret(t *testing.T) {
	mine := bytes.Clone(secret)
	v := newVerifier(t, auth.Config{HMACSecret: mine})
	token := hs256(t, lobbyClaims())
	clear(mine)
	accept(t, v, token)
}

func TestConcurrentUse(t *testing.T) {
	edPub, edPriv := newEd25519Key(t)
	v := newVerifier(t, auth.Config{HMACSecret: secret, PublicKeys: []crypto.PublicKey{edPub}})
	tokens := []string{hs256(t, lobbyClaims()), sign(t, jwt.SigningMethodEdDSA, edPriv, lobbyClaims())}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				id, err := v.Token(tokens[(g+i)%len(tokens)])
				if err != nil {
					t.Error(err)
					return
				}
				if !id.Can(auth.Join, "lobby") {
					t.Error("lost a grant")
					return
				}
			}
		})
	}
	wg.Wait()
}

// FuzzToken feeds arbitrary strings to Token, both as whole tokens and as
// the claims of a correctly signed token, so the fuzzer reaches the claim
// checks behind the signature too. Token must never panic, and an identity
// it accepts must name a user.
func FuzzToken(f *testing.F) {
	edPub, edPriv := newEd25519Key(f)
	v := newVerifier(f, auth.Config{
		HMACSecret: secret,
		PublicKeys: []crypto.PublicKey{&rsaKey().PublicKey, edPub},
		Leeway:     time.Minute,
	})
	claims := lobbyClaims()
	claims["herald"] = map[string]any{"join": []string{"lobby", "team-*"}, "publish": []string{"lobby"}, "read": []string{"*"}, "rooms": []string{"x"}}
	f.Add(hs256(f, claims))
	f.Add(sign(f, jwt.SigningMethodRS256, rsaKey(), claims))
	f.Add(sign(f, jwt.SigningMethodEdDSA, edPriv, claims))
	f.Add(sign(f, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims))
	f.Add(`{"sub":"alice","herald":{"join":["lobby","team-*"],"read":["*"]}}`)
	f.Add(`{"sub":"bob","exp":1e300,"nbf":-1e300,"herald":{"rooms":["a*","a","*"]}}`)
	f.Add(`{"sub":"","herald":{"join":[1,null,{}]}}`)
	f.Add("")
	f.Add("..")
	f.Add("e30.e30.e30")

	check := func(t *testing.T, token string) {
		id, err := v.Token(token)
		if err != nil {
			if !errors.Is(err, auth.ErrUnauthorized) {
				t.Fatalf("error does not wrap ErrUnauthorized: %v", err)
			}
			if len(token) >= 16 && strings.Contains(err.Error(), token) {
				t.Fatalf("error echoes the token: %v", err)
			}
			return
		}
		if id == nil || id.User == "" {
			t.Fatalf("accepted identity %+v has no user", id)
		}
		for _, a := range []auth.Action{auth.Join, auth.Publish, auth.Read} {
			id.Can(a, token)
			id.Can(a, id.User)
		}
		id.Expired(time.Now())
	}
	f.Fuzz(func(t *testing.T, s string) {
		check(t, s)
		check(t, signRaw([]byte(s), secret))
	})
}
