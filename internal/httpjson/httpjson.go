// Package httpjson holds what the node's JSON HTTP APIs (package admin's
// operator API and package serverapi's server API) do alike: reading a
// bounded body strictly into a type, writing a reply, and reading who is
// asking (a bearer credential, a loopback peer); and, for their Go
// clients, what to quote of a reply that is not the API's. It knows
// nothing of either API's error shape or routes.
package httpjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
)

// ErrTooLarge is returned by ReadBody for a body over its bound.
var ErrTooLarge = errors.New("the request body is too large")

// ReadBody reads r's body, at most max bytes; a longer body is ErrTooLarge
// (wrapped with the bound) and the connection is closed after the reply,
// so the rest is never read.
func ReadBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, fmt.Errorf("%w: at most %d bytes", ErrTooLarge, max)
		}
		return nil, fmt.Errorf("read the request body: %w", err)
	}
	return b, nil
}

// Decode reads one JSON value from b into v. Blank input leaves v as it
// is; unknown fields are refused, so a typo is an error, not a default.
func Decode(b []byte, v any) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("the request body holds more than one JSON value")
	}
	return nil
}

// Marshal encodes v as a reply body. HTML is not escaped: messages quote
// names in <angle brackets>, and people read them raw.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Write sends body, a JSON reply, with status; replies are never cached.
func Write(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// Bearer reads an "Authorization: <scheme> <credential>" header whose
// scheme is one of schemes (compared without case). has says a header was
// sent; malformed that it was not of that form.
func Bearer(r *http.Request, schemes ...string) (cred string, has, malformed bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false, false
	}
	scheme, cred, ok := strings.Cut(h, " ")
	cred = strings.TrimSpace(cred)
	if !ok || cred == "" {
		return "", false, true
	}
	for _, s := range schemes {
		if strings.EqualFold(scheme, s) {
			return cred, true, false
		}
	}
	return "", false, true
}

// IsLoopback reports whether a request's remote address is a loopback one.
// Behind a reverse proxy on the same machine every request looks local.
func IsLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Excerpt is the start of a reply that is not the API's own (a proxy's
// page, an old node's, a wrong address's), for an error message: at most
// 200 bytes of it, trimmed.
func Excerpt(body []byte) string {
	text := strings.TrimSpace(string(body))
	if len(text) > 200 {
		text = text[:200] + "..."
	}
	return text
}
