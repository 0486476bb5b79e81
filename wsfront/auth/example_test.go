package auth_test

import (
	"fmt"
	"log"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldhq/herald/wsfront/auth"
)

// A token a node accepts: an HMAC-signed JWT naming the user and the rooms
// it may join, publish to and read. The issuer signs it with the secret the
// nodes verify with (auth.Config.HMACSecret, `herald serve
// --jwt-secret-file`); the client sends it as client.Config.Token.
func ExampleVerifier_Token() {
	secret := []byte("the HMAC secret tokens are signed with, 32+ bytes")
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "alice",
		"exp": time.Now().Add(time.Hour).Unix(),
		"herald": map[string][]string{
			"join":    {"lobby", "team-*"}, // an exact name, or a prefix ending in *
			"publish": {"lobby"},
			"read":    {"*"},
		},
	}).SignedString(secret)
	if err != nil {
		log.Fatal(err)
	}

	// What the node does with it when the client authenticates:
	v, err := auth.New(auth.Config{HMACSecret: secret})
	if err != nil {
		log.Fatal(err)
	}
	id, err := v.Token(token)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("user:", id.User)
	fmt.Println("join team-red:", id.Can(auth.Join, "team-red"))
	fmt.Println("publish team-red:", id.Can(auth.Publish, "team-red"))
	fmt.Println("read anything:", id.Can(auth.Read, "team-blue"))
	// Output:
	// user: alice
	// join team-red: true
	// publish team-red: false
	// read anything: true
}
