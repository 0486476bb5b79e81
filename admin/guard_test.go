package admin_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/heraldhq/herald/admin"
)

// Guard lets through what the admin API would take, and answers the rest
// as the admin API does.
func TestGuard(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "secret stuff") })
	const token = "an-admin-token-of-enough-length"
	for _, tc := range []struct {
		name   string
		opts   admin.Options
		header string
		want   int
	}{
		{"token", admin.Options{Token: token}, "Bearer " + token, http.StatusOK},
		{"wrong token", admin.Options{Token: token}, "Bearer nope", http.StatusUnauthorized},
		{"no token", admin.Options{Token: token}, "", http.StatusUnauthorized},
		{"malformed", admin.Options{Token: token}, "Basic abc", http.StatusUnauthorized},
		{"none configured", admin.Options{}, "", http.StatusForbidden},
		{"loopback in dev mode", admin.Options{AllowNoToken: true}, "", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(admin.Guard(tc.opts, ok))
			defer srv.Close()
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/debug/pprof/", nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.want)
			}
			if tc.want != http.StatusOK && string(body) == "secret stuff" {
				t.Fatal("a refused request reached the handler")
			}
		})
	}
}
